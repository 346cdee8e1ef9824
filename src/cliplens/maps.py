"""Score maps of every explanation method computed live: one method signature and registry, and
the rendering and segmentation of maps as torch tensors (on the model's device).

Every method computes patch-grid scores ``[B, C, gh, gw]`` (higher = more relevant) for ``B``
images and ``C`` texts through one signature (:data:`ScoreFunction`) and is registered here by its
analysis line (:func:`register`); storage, rendering, segmentation, evaluation and figures then
treat every method alike. Stored maps are read, rendered and evaluated without torch by
:mod:`cliplens.stored_maps`, the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cliplens.stored_maps import MINMAX_EPS, ExplanationScores

if TYPE_CHECKING:  # figure jobs read stored maps without open_clip
    from cliplens.models import LoadedModel

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


def stored_scores(
    image_ids: list[str], labels: list[str], image_hw: tuple[int, int], scores: dict[str, np.ndarray], text: np.ndarray
) -> ExplanationScores:
    """Stored-map scores of registered methods, each with its ``normalised`` flag from the registry."""
    normalised = {method: get_method(method).normalised for method in scores}
    return ExplanationScores(image_ids, labels, image_hw, scores, text, normalised)


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


def evaluation_rows(manifest: pd.DataFrame, max_images: int) -> pd.DataFrame:
    """Images to explain: those with masks when the dataset has masks, the first ``max_images``."""
    with_masks = manifest[manifest["mask_path"].notna()]
    return (with_masks if len(with_masks) else manifest).head(max_images)
