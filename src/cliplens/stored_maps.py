"""Explanation maps as stored: the patch-grid scores of every method for images x labels, read back,
rendered, segmented, evaluated against masks and drawn, without torch or model code, so that the
jobs that only read stored maps start in a second instead of importing torch.

Maps are stored at patch-grid resolution ([images, labels, gh, gw], float16, NPZ): compact and
exact, since rendering is deterministic and cheap. Rendering here is what :mod:`cliplens.maps`
does to live maps with torch: min-max per map, then bilinear upsampling with pixel centres aligned
(torch's ``interpolate(mode="bilinear", align_corners=False)``, to float rounding; tested).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from cliplens.image_files import square_masks
from cliplens.io import atomic_output
from cliplens.metrics import binary_metrics, miou, summarise
from cliplens.plotting import segmentation_figure

MINMAX_EPS = 1e-12
"""Smallest range a map is divided by when min-max normalised (a constant map renders as 0)."""
RENDER_BUDGET = 1 << 26
"""Floats of rendered maps held at once when segmenting (256 MB)."""


def bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` float32 weights of bilinear resampling along one axis with pixel centres
    aligned (output i samples input ``(i + 0.5) n_in / n_out - 0.5``, clamped at the edges)."""
    source = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    fraction = (source - low).astype(np.float32)
    weights = np.zeros((n_out, n_in), np.float32)
    np.add.at(weights, (np.arange(n_out), low), 1 - fraction)
    np.add.at(weights, (np.arange(n_out), high), fraction)
    return weights


def upsample_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of maps ``[..., gh, gw]`` to ``[..., *size]`` (float32), as two matrix
    products (:func:`bilinear_weights`)."""
    maps = np.asarray(maps, dtype=np.float32)
    rows = bilinear_weights(maps.shape[-2], size[0])
    columns = bilinear_weights(maps.shape[-1], size[1])
    return rows @ maps @ columns.T


def render_maps(scores: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Patch-grid scores ``[..., gh, gw]`` -> maps ``[..., *size]`` in [0, 1]: min-max per map, then
    bilinear upsampling."""
    scores = np.asarray(scores, dtype=np.float32)
    low = scores.min(axis=(-2, -1), keepdims=True)
    high = scores.max(axis=(-2, -1), keepdims=True)
    return upsample_maps((scores - low) / np.maximum(high - low, MINMAX_EPS), size)


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
    """method -> whether its segmentation compares min-max normalised maps (the method's
    registration in :mod:`cliplens.maps`); stored with the scores, so that reading them needs no
    method registry (no model code)."""

    def pair_maps(
        self, method: str, image_index: Sequence[int] | np.ndarray, label_index: Sequence[int] | np.ndarray
    ) -> np.ndarray:
        """Rendered maps [M, H, W] in [0, 1] of (image, label) pairs (:func:`render_maps`)."""
        return render_maps(self.scores[method][np.asarray(image_index), np.asarray(label_index)], self.image_hw)

    def segmentation(self, method: str, chunk: int | None = None) -> np.ndarray:
        """Open-vocabulary segmentation [images, H, W]: per-pixel argmax over labels of the method's maps
        (rendered maps, or upsampled raw scores for methods that are not ``normalised``); ``chunk``
        images are rendered at once (default: as many as RENDER_BUDGET floats allow)."""
        scores = self.scores[method]
        chunk = chunk or max(1, RENDER_BUDGET // max(scores.shape[1] * self.image_hw[0] * self.image_hw[1], 1))
        draw = render_maps if self.normalised[method] else upsample_maps
        parts = [draw(scores[start : start + chunk], self.image_hw).argmax(axis=1) for start in range(0, len(scores), chunk)]
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
        chosen_maps = explanations.pair_maps(method, image_index, label_index)
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
