"""Data access of the explorer: the runs stored under a results folder, read once and cached.

A run is one (model, dataset) pair with results of any of the three lines. The model itself is loaded
only when a view must encode a new text or image (:meth:`Run.loaded`), once per run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image

from cliplens.datasets import read_manifest
from cliplens.image_files import load_rgb
from cliplens.images import pixels_of, square_transform
from cliplens.models import LoadedModel, load_model

LINES = ("perturbation", "explain", "interpret")
DISPLAY_SIZE = 224
"""Side in pixels of the images the explorer shows (square, like the maps)."""


@dataclass(frozen=True)
class Run:
    """The stored results of one model on one dataset."""

    results: Path
    model: str
    dataset: str

    @property
    def key(self) -> str:
        return f"model={self.model} · dataset={self.dataset}"

    @functools.cached_property
    def cfg(self) -> dict[str, Any]:
        """The resolved config the results were made with (``results/config/resolved.yaml``)."""
        path = self.results / "config" / "resolved.yaml"
        return yaml.safe_load(path.read_text()) if path.is_file() else {}

    @property
    def model_cfg(self) -> dict[str, Any] | None:
        return (self.cfg.get("model_grid") or {}).get(self.model)

    @property
    def random_weights(self) -> bool:
        """Whether the model's weights are random (as the workflow marks its figures)."""
        return bool(self.model_cfg and self.model_cfg["source"] == "random")

    def banner(self) -> str:
        """The line every view starts with: the model, the dataset, and whether the weights are random."""
        text = f"**Model `{self.model}`** on dataset `{self.dataset}`"
        if self.random_weights:
            return text + " — **random weights**: nothing here says what a trained CLIP sees."
        return text + (
            " — weights: " + str(self.model_cfg.get("pretrained") or self.model_cfg["source"]) if self.model_cfg else ""
        )

    def folder(self, line: str) -> Path:
        return self.results / line / f"model={self.model}" / f"dataset={self.dataset}"

    def has(self, line: str, name: str = "") -> bool:
        return (self.folder(line) / name).exists()

    def table(self, line: str, name: str) -> pd.DataFrame:
        """A stored Parquet or CSV table of one line (cached)."""
        return _read_table(self.folder(line) / name)

    @functools.cached_property
    def manifest(self) -> pd.DataFrame:
        """The dataset's manifest (image ids, paths, labels), beside the results folder."""
        data_dir = self.results.parent / self.cfg.get("data_dir", "data")
        return read_manifest(data_dir / self.dataset / "manifest.parquet").set_index("image_id", drop=False)

    @property
    def image_ids(self) -> list[str]:
        return self.manifest["image_id"].tolist()

    def pixels(self, image_ids: list[str], size: int = DISPLAY_SIZE, resize_mode: str = "squash") -> torch.Tensor:
        """[0, 1] square pixels [n, 3, size, size] of stored images, without the model."""
        transform = square_transform(size, resize_mode)
        paths = self.manifest.loc[image_ids, "path"]
        return pixels_of([load_rgb(path) for path in paths], transform)

    def loaded(self) -> LoadedModel:
        """The run's model, loaded on first use (only where a new text or image must be encoded)."""
        if self.model_cfg is None:
            raise ValueError(f"the resolved config of {self.results} does not describe model {self.model}")
        return _load(self.results, self.model, yaml.safe_dump(self.model_cfg))


@functools.lru_cache(maxsize=4)
def _load(results: Path, model: str, model_cfg: str) -> LoadedModel:
    return load_model(yaml.safe_load(model_cfg))


@functools.lru_cache(maxsize=64)
def _read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def find_runs(results: Path) -> list[Run]:
    """Every (model, dataset) with results of some line under ``results``, sorted."""
    found = {
        (folder.parent.name.removeprefix("model="), folder.name.removeprefix("dataset="))
        for line in LINES
        for folder in (results / line).glob("model=*/dataset=*")
    }
    return [Run(results, model, dataset) for model, dataset in sorted(found)]


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """An image [H, W, 3] in [0, 1] under a heat map [H, W] (min-max normalised, jet colours)."""
    from matplotlib import colormaps

    span = float(heat.max() - heat.min())
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    colours = colormaps["jet"](heat)[..., :3]
    return Image.fromarray((255 * ((1 - alpha) * image + alpha * colours)).astype(np.uint8))


def as_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """PIL images of [0, 1] pixels [n, 3, H, W]."""
    array = pixels.clamp(0, 1).permute(0, 2, 3, 1).mul(255).byte().cpu().numpy()
    return [Image.fromarray(a) for a in array]
