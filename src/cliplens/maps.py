"""Score maps of every explanation method: one method signature and registry, storage, rendering,
segmentation and evaluation against masks.

Every method computes patch-grid scores ``[B, C, gh, gw]`` (higher = more relevant) for ``B``
images and ``C`` texts through one signature (:data:`ScoreFunction`) and is registered here by its
analysis line (:func:`register`); storage, rendering, segmentation, evaluation and figures then
treat every method alike. Maps are stored at patch-grid resolution ([images, labels, gh, gw],
float16, NPZ) - compact and exact, since rendering (min-max per map + bilinear upsampling) is
deterministic and cheap.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cliplens.image_files import square_masks
from cliplens.io import atomic_output
from cliplens.metrics import binary_metrics, miou, summarise
from cliplens.plotting import segmentation_figure

if TYPE_CHECKING:  # figure jobs read stored maps without open_clip
    from cliplens.models import LoadedModel

MINMAX_EPS = 1e-12
RENDER_BUDGET = 1 << 26
"""Floats of rendered maps held at once when segmenting (256 MB)."""

ScoreFunction = Callable[["LoadedModel", torch.Tensor, torch.Tensor, Mapping[str, Any]], torch.Tensor]
"""``scores(loaded, pixels [B, 3, S, S] in [0, 1], text [C, D] normalised, settings) -> [B, C, gh, gw]``.

``settings`` holds the method's own options (e.g. ``surgery_depth``) and, for free-text prompts
that each stand alone, ``empty_feature``: the embedding of the empty prompt."""


@dataclass(frozen=True)
class MapMethod:
    """A registered explanation method."""

    name: str
    scores: ScoreFunction
    normalised: bool = True
    """Segmentation takes the per-pixel argmax over maps min-max normalised per (image, label);
    ``False``: over the bilinearly upsampled raw scores (scores already comparable across labels)."""


METHODS: dict[str, MapMethod] = {}


def register(name: str, normalised: bool = True) -> Callable[[ScoreFunction], ScoreFunction]:
    """Decorator registering a score function as the explanation method ``name``."""

    def decorate(function: ScoreFunction) -> ScoreFunction:
        METHODS[name] = MapMethod(name, function, normalised)
        return function

    return decorate


def get_method(name: str) -> MapMethod:
    """The registered method ``name`` (its analysis line must have been imported)."""
    if name not in METHODS:
        raise ValueError(f"explanation method {name!r} unknown; registered: {sorted(METHODS)}")
    return METHODS[name]


def method_scores(
    loaded: LoadedModel, name: str, pixels: torch.Tensor, text: torch.Tensor, settings: Mapping[str, Any]
) -> torch.Tensor:
    """Patch-grid scores ``[B, C, gh, gw]`` (float32, CPU) of one registered method."""
    return get_method(name).scores(loaded, pixels, text.to(pixels.device), settings).float().cpu()


def render_scores(scores: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Patch-grid scores ``[B, C, gh, gw]`` -> maps ``[B, C, H, W]`` in [0, 1] (see :func:`render_patch_maps`)."""
    batch, labels, gh, gw = scores.shape
    return render_patch_maps(scores.reshape(batch, labels, gh * gw).transpose(1, 2), (gh, gw), out_hw)


def render_patch_maps(patch_scores: torch.Tensor, grid_hw: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """Patch scores ``[B, gh * gw, C]`` -> maps ``[B, C, H, W]``: min-max per (image, label), bilinear."""
    batch, count, labels = patch_scores.shape
    if count != grid_hw[0] * grid_hw[1]:
        raise ValueError(f"{count} patch scores do not fill a {grid_hw[0]}x{grid_hw[1]} grid")
    low = patch_scores.amin(dim=1, keepdim=True)
    high = patch_scores.amax(dim=1, keepdim=True)
    scaled = (patch_scores - low) / (high - low).clamp_min(MINMAX_EPS)
    maps = scaled.transpose(1, 2).reshape(batch, labels, *grid_hw)
    if tuple(out_hw) == tuple(grid_hw):
        return maps
    return F.interpolate(maps, size=tuple(out_hw), mode="bilinear", align_corners=False)


def segment(maps: torch.Tensor) -> torch.Tensor:
    """Open-vocabulary segmentation: per-pixel argmax over labels, ``[B, C, H, W]`` -> ``[B, H, W]``."""
    return maps.argmax(dim=1)


def upsample_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of maps [..., gh, gw] to [..., size]."""
    flat = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).reshape(-1, 1, *maps.shape[-2:])
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*maps.shape[:-2], *size).numpy()


@dataclass
class ExplanationScores:
    """Patch-grid scores of every method for a set of images x labels."""

    image_ids: list[str]
    labels: list[str]
    image_hw: tuple[int, int]
    scores: dict[str, np.ndarray]
    """method -> [images, labels, gh, gw] float32 scores (higher = more relevant)."""
    text: np.ndarray
    """[labels, D] normalised, prompt-ensembled label embeddings used for the maps."""
    normalised: dict[str, bool]
    """method -> whether its segmentation compares min-max normalised maps (:attr:`MapMethod.normalised`);
    stored with the scores, so that reading them needs no method registry (no model code)."""

    @classmethod
    def of_methods(
        cls, image_ids: list[str], labels: list[str], image_hw: tuple[int, int], scores: dict[str, np.ndarray], text: np.ndarray
    ) -> ExplanationScores:
        """Scores of registered methods, their ``normalised`` flags taken from the registry."""
        return cls(image_ids, labels, image_hw, scores, text, {method: get_method(method).normalised for method in scores})

    def pair_maps(
        self, method: str, image_index: Sequence[int] | np.ndarray, label_index: Sequence[int] | np.ndarray
    ) -> torch.Tensor:
        """Rendered maps [M, H, W] in [0, 1] of (image, label) pairs (min-max per map, bilinear upsampling)."""
        scores = torch.from_numpy(self.scores[method][np.asarray(image_index), np.asarray(label_index)])
        return render_scores(scores[:, None], self.image_hw)[:, 0]

    def segmentation(self, method: str, chunk: int | None = None) -> np.ndarray:
        """Open-vocabulary segmentation [images, H, W]: per-pixel argmax over labels of the method's maps
        (rendered maps, or upsampled raw scores for methods that are not ``normalised``); ``chunk``
        images are rendered at once (default: as many as RENDER_BUDGET floats allow)."""
        scores = self.scores[method]
        chunk = chunk or max(1, RENDER_BUDGET // max(scores.shape[1] * self.image_hw[0] * self.image_hw[1], 1))
        normalised = self.normalised[method]
        parts = []
        for start in range(0, len(scores), chunk):  # chunks bound the [chunk, labels, H, W] rendering
            part = scores[start : start + chunk]
            if normalised:
                parts.append(segment(render_scores(torch.from_numpy(part), self.image_hw)).numpy())
            else:
                parts.append(upsample_maps(part, self.image_hw).argmax(axis=1))
        return np.concatenate(parts) if parts else np.empty((0, *self.image_hw), np.int64)

    def head(self, count: int) -> ExplanationScores:
        """The first ``count`` images."""
        scores = {method: values[:count] for method, values in self.scores.items()}
        return dataclasses.replace(self, image_ids=self.image_ids[:count], scores=scores)

    def save(self, path: str | os.PathLike, random_weights: bool) -> None:
        """Write an NPZ (atomically) with an index of image ids and labels."""
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            scores: dict[str, Any] = {f"scores_{m}": s.astype(np.float16) for m, s in self.scores.items()}
            scores |= {f"normalised_{m}": np.asarray(self.normalised[m]) for m in self.scores}
            np.savez(
                handle,
                image_ids=np.asarray(self.image_ids, dtype=str),
                labels=np.asarray(self.labels, dtype=str),
                image_hw=np.asarray(self.image_hw),
                text=self.text,
                random_weights=np.asarray(random_weights),
                **scores,
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExplanationScores:
        with np.load(path) as data:
            methods = [key.removeprefix("scores_") for key in data if key.startswith("scores_")]
            missing = [method for method in methods if f"normalised_{method}" not in data]
            if missing:
                raise ValueError(f"{path} holds no normalised flag for {missing}: it predates them; rerun the job that wrote it")
            return cls(
                image_ids=data["image_ids"].tolist(),
                labels=data["labels"].tolist(),
                image_hw=cast(tuple[int, int], tuple(int(v) for v in data["image_hw"])),
                scores={method: data[f"scores_{method}"].astype(np.float32) for method in methods},
                text=data["text"],
                normalised={method: bool(data[f"normalised_{method}"]) for method in methods},
            )


def mask_evaluation(
    explanations: ExplanationScores,
    rows: pd.DataFrame,
    class_ids: Sequence[int],
    resize_mode: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (image, present class, method): mask metrics; and per method: open-vocabulary segmentation mIoU.

    ``class_ids[c]`` is the mask id of label c. Masks get the same square geometry as the images.
    """
    size = explanations.image_hw
    by_id = rows.set_index("image_id")
    masks = square_masks(by_id.loc[explanations.image_ids, "mask_path"].tolist(), size, resize_mode)
    id_to_label = {cid: c for c, cid in enumerate(class_ids)}
    per_map, segmentation = [], []
    image_index, label_index = [], []
    for i, mask in enumerate(masks):
        present = [id_to_label[v] for v in np.unique(mask) if v in id_to_label]
        image_index += [i] * len(present)
        label_index += present
    for method in explanations.scores:
        chosen_maps = explanations.pair_maps(method, image_index, label_index).numpy()
        chosen_masks = masks[image_index] == np.asarray(class_ids)[label_index][:, None, None]
        metrics = binary_metrics(chosen_maps, chosen_masks)
        per_map.append(
            pd.DataFrame(
                {
                    "method": method,
                    "image_id": np.asarray(explanations.image_ids)[image_index],
                    "label": np.asarray(explanations.labels)[label_index],
                    **metrics,
                }
            )
        )
        predicted = np.asarray(class_ids)[explanations.segmentation(method)]
        result = miou(predicted, masks, num_classes=max(class_ids) + 1, ignore_index=0)
        segmentation.append({"method": method, "miou": result["miou"], "pixel_accuracy": result["pixel_accuracy"]})
    return pd.concat(per_map, ignore_index=True), pd.DataFrame(segmentation)


def evaluation_rows(manifest: pd.DataFrame, max_images: int) -> pd.DataFrame:
    """Images to explain: those with masks when the dataset has masks, the first ``max_images``."""
    with_masks = manifest[manifest["mask_path"].notna()]
    return (with_masks if len(with_masks) else manifest).head(max_images)


def evaluation_summary(per_map: pd.DataFrame, model: str, n_boot: int) -> pd.DataFrame:
    """Mean and bootstrap CI of every per-map metric per (model, method)."""
    return summarise(per_map.assign(model=model), by=["model", "method"], n_boot=n_boot)


def plot_segmentation(
    scores: ExplanationScores,
    method: str,
    images: np.ndarray,
    manifest: pd.DataFrame,
    resize_mode: str,
    path: str | os.PathLike,
    random_weights: bool = False,
) -> list[Path]:
    """The segmentation of the first ``len(images)`` images of ``scores`` by ``method``, beside the
    ground truth where the dataset has masks (``images [n, H, W, 3]`` in the maps' geometry)."""
    shown = scores.head(len(images))
    predicted = shown.segmentation(method)
    mask_ids = manifest.attrs.get("mask_ids")
    if mask_ids:
        masks = manifest.set_index("image_id").loc[shown.image_ids, "mask_path"]
        truth = square_masks(masks.tolist(), scores.image_hw, resize_mode) if masks.notna().all() else None
        names = dict(zip(mask_ids, scores.labels))
        return segmentation_figure(
            images, np.asarray(mask_ids)[predicted], names, path, ground_truth=truth, random_weights=random_weights
        )
    names = {i + 1: name for i, name in enumerate(scores.labels)}  # + 1: no class is drawn as "ignored"
    return segmentation_figure(images, predicted + 1, names, path, random_weights=random_weights)
