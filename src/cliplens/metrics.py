"""Evaluation metrics of maps against masks, deletion/insertion, bootstrap confidence intervals.

Conventions (details and formulas in ``docs/methods.md``):

- maps are float ``[M, H, W]`` (or ``[B, H, W]``), higher = more relevant, min-max normalised
  to [0, 1] per map, at the resolution of the masks / images they are compared with;
- masks are bool ``[M, H, W]`` (one per map) or class-index ``[B, H, W]`` ints;
- array inputs may be numpy arrays or torch tensors; every metric comes back as numpy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import ndimage

if TYPE_CHECKING:  # torch is imported where a metric needs it: table-only jobs stay free of it
    import torch

POINTING_TOLERANCE_PX = 15.0


BASELINES = ("zero", "blur")


ScoreFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
"""``score_fn(pixels [B', 3, H, W], image_index [B']) -> scores [B']``; the index says which input image
(and so which target) each row comes from."""


def as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    """A numpy view of a numpy array or (detached, CPU) torch tensor."""
    torch = sys.modules.get("torch")  # a tensor implies torch is imported
    if torch is not None and isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def threshold_at_mean(maps: np.ndarray) -> np.ndarray:
    """Binary predictions ``map > mean(map)``, the mean taken per map over its pixels."""
    return maps > maps.mean(axis=(-2, -1), keepdims=True)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Average precision of each row of ``scores [M, N]`` as a ranking of ``labels [M, N]``.

    AP = sum over distinct thresholds of (recall step) x (precision at that threshold); tied
    scores form one threshold. NaN for rows without positives.
    """
    order = np.argsort(-scores, axis=1, kind="stable")
    sorted_scores = np.take_along_axis(scores, order, axis=1)
    sorted_labels = np.take_along_axis(labels, order, axis=1)
    n = scores.shape[1]
    positions = np.arange(n)
    true_positives = np.cumsum(sorted_labels, axis=1)
    # every position is evaluated at the last position of its run of tied scores
    ends_tie = np.ones_like(sorted_labels, dtype=bool)
    ends_tie[:, :-1] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    tie_end = np.where(ends_tie, positions, n - 1)
    tie_end = np.minimum.accumulate(tie_end[:, ::-1], axis=1)[:, ::-1]
    precision = np.take_along_axis(true_positives, tie_end, axis=1) / (tie_end + 1)
    n_positives = sorted_labels.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (precision * sorted_labels).sum(axis=1) / n_positives


def distance_to_mask(masks: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) from every pixel to the nearest pixel of its own mask ``[M, H, W]``.

    One exact EDT over the stack: the map axis gets a spacing larger than any in-map distance,
    so the nearest mask pixel is always found in the same map. Empty masks give values larger
    than the image diagonal.
    """
    height, width = masks.shape[-2:]
    map_spacing = float(np.hypot(height, width)) + 1.0
    return ndimage.distance_transform_edt(~masks, sampling=(map_spacing, 1.0, 1.0))


def binary_metrics(
    maps: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    pointing_tolerance: float = POINTING_TOLERANCE_PX,
) -> dict[str, np.ndarray]:
    """Per-map metrics of ``maps [M, H, W]`` against bool ``masks [M, H, W]``; each value is ``[M]``.

    Keys: ``iou`` and ``pixel_accuracy`` (map thresholded at its own mean), ``average_precision``
    (map as per-pixel score), ``pointing_hit`` (1.0 when the argmax pixel lies within
    ``pointing_tolerance`` px of the mask), ``energy_in_mask`` (map sum inside / total).
    Everything but ``pixel_accuracy`` is NaN where the mask is empty.
    """
    maps = as_numpy(maps).astype(np.float64)
    masks = as_numpy(masks).astype(bool)
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} must both be [M, H, W]")
    n_maps = maps.shape[0]
    flat_maps, flat_masks = maps.reshape(n_maps, -1), masks.reshape(n_maps, -1)
    has_object = flat_masks.any(axis=1)

    predicted = threshold_at_mean(maps).reshape(n_maps, -1)
    intersection = (predicted & flat_masks).sum(axis=1)
    union = (predicted | flat_masks).sum(axis=1)
    argmax = flat_maps.argmax(axis=1)
    distance_at_max = distance_to_mask(masks).reshape(n_maps, -1)[np.arange(n_maps), argmax]
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = intersection / union
        energy = (flat_maps * flat_masks).sum(axis=1) / flat_maps.sum(axis=1)
    metrics = {
        "iou": iou,
        "pixel_accuracy": (predicted == flat_masks).mean(axis=1),
        "average_precision": average_precision(flat_maps, flat_masks),
        "pointing_hit": (distance_at_max <= pointing_tolerance).astype(np.float64),
        "energy_in_mask": energy,
    }
    for name in ("iou", "average_precision", "pointing_hit", "energy_in_mask"):
        metrics[name] = np.where(has_object, metrics[name], np.nan)
    return metrics


def confusion_matrix(
    pred_labels: np.ndarray | torch.Tensor | Sequence[np.ndarray],
    gt: np.ndarray | torch.Tensor | Sequence[np.ndarray],
    num_classes: int,
    ignore_index: int | None = 0,
) -> np.ndarray:
    """``[num_classes, num_classes]`` pixel counts (row = ground truth, column = prediction).

    Inputs are ``[B, H, W]`` arrays or sequences of ``[H, W]`` arrays (sizes may differ per
    image, but each prediction must match its ground truth). Pixels whose ground truth is
    ``ignore_index`` are skipped.
    """
    pred = np.concatenate([as_numpy(p).ravel() for p in pred_labels]).astype(np.int64)
    truth = np.concatenate([as_numpy(g).ravel() for g in gt]).astype(np.int64)
    if pred.shape != truth.shape:
        raise ValueError("predicted and ground-truth label maps differ in size")
    valid = truth != ignore_index if ignore_index is not None else np.ones_like(truth, dtype=bool)
    pred, truth = pred[valid], truth[valid]
    if pred.size and (min(pred.min(), truth.min()) < 0 or max(pred.max(), truth.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    counts = np.bincount(truth * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def miou(
    pred_labels: np.ndarray | torch.Tensor | Sequence[np.ndarray],
    gt: np.ndarray | torch.Tensor | Sequence[np.ndarray],
    num_classes: int,
    ignore_index: int | None = 0,
) -> dict[str, float | np.ndarray]:
    """Dataset-level mean IoU and pixel accuracy of label maps ``[B, H, W]``.

    Intersections and unions are accumulated over all images first; ``miou`` is the mean of
    ``per_class_iou [num_classes]`` over classes present in the (non-ignored) ground truth,
    the other entries are NaN. ``pixel_accuracy`` counts non-ignored pixels only.
    """
    confusion = confusion_matrix(pred_labels, gt, num_classes, ignore_index)
    true_positives = np.diag(confusion)
    gt_count = confusion.sum(axis=1)
    union = gt_count + confusion.sum(axis=0) - true_positives
    present = gt_count > 0
    per_class_iou = np.full(num_classes, np.nan)
    per_class_iou[present] = true_positives[present] / union[present]
    total = confusion.sum()
    return {
        "miou": float(per_class_iou[present].mean()) if present.any() else float("nan"),
        "pixel_accuracy": float(true_positives.sum() / total) if total else float("nan"),
        "per_class_iou": per_class_iou,
    }


def perturbation_baseline(images: torch.Tensor, kind: str, blur_sigma: float) -> torch.Tensor:
    """The image pixels are moved towards: ``'zero'`` (all zeros) or ``'blur'`` (Gaussian blur)."""
    import torch
    from torchvision.transforms.functional import gaussian_blur

    if kind == "zero":
        return torch.zeros_like(images)
    if kind == "blur":
        kernel = 2 * int(np.ceil(3 * blur_sigma)) + 1
        return gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[blur_sigma, blur_sigma])
    raise ValueError(f"baseline {kind!r} unknown; valid: {list(BASELINES)}")


def saliency_rank(maps: torch.Tensor) -> torch.Tensor:
    """``[B, H*W]`` rank of every pixel by decreasing saliency (0 = most salient; ties in raster order)."""
    import torch

    flat = maps.reshape(maps.shape[0], -1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def perturbation_curve(
    start: torch.Tensor,
    end: torch.Tensor,
    rank: torch.Tensor,
    counts: torch.Tensor,
    score_fn: ScoreFn,
    batch_size: int,
) -> torch.Tensor:
    """``[B, K]`` scores of images where the ``counts[k]`` top-ranked pixels of ``start`` come from ``end``.

    All (image, step) pairs are scored in chunks of ``batch_size`` through ``score_fn``.
    """
    import torch

    n_images, _, height, width = start.shape
    n_steps = counts.numel()
    pair = torch.arange(n_images * n_steps, device=start.device)
    scores = []
    with torch.no_grad():
        for chunk in pair.split(batch_size):
            image, step = chunk // n_steps, chunk % n_steps
            replaced = (rank[image] < counts[step, None]).view(-1, 1, height, width)
            scores.append(score_fn(torch.where(replaced, end[image], start[image]), image).float())
    return torch.cat(scores).view(n_images, n_steps)


def deletion_insertion(
    images: torch.Tensor,
    maps: torch.Tensor | np.ndarray,
    score_fn: ScoreFn,
    steps: int = 20,
    baseline_delete: str = "zero",
    baseline_insert: str = "blur",
    blur_sigma: float = 5.0,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Deletion and insertion curves of ``maps [B, H, W]`` for ``images [B, 3, H, W]``.

    Step k of ``steps`` moves the ``floor(k * H*W / steps)`` most salient pixels (all channels):
    deletion replaces them in the image by ``baseline_delete``; insertion starts from
    ``baseline_insert`` and restores them from the image. ``score_fn`` maps a batch
    ``[B', 3, H, W]`` and the input index of each row ``[B']`` to scores ``[B']`` (e.g. cosine to
    that image's target text). Returns
    ``(deletion_auc [B], insertion_auc [B], curves)``; the AUCs are trapezoids over the
    fraction of moved pixels in [0, 1]; ``curves`` holds ``fraction [steps+1]``, ``deletion``
    and ``insertion`` ``[B, steps+1]``.
    """
    import torch

    maps = torch.as_tensor(maps, device=images.device)
    if images.ndim != 4 or maps.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"images {tuple(images.shape)} must be [B, C, H, W] and maps {tuple(maps.shape)} [B, H, W]")
    n_pixels = maps.shape[1] * maps.shape[2]
    counts = torch.arange(steps + 1, device=images.device) * n_pixels // steps
    fraction = counts.double() / n_pixels
    rank = saliency_rank(maps)
    deletion = perturbation_curve(
        images, perturbation_baseline(images, baseline_delete, blur_sigma), rank, counts, score_fn, batch_size
    )
    insertion = perturbation_curve(
        perturbation_baseline(images, baseline_insert, blur_sigma), images, rank, counts, score_fn, batch_size
    )
    deletion, insertion = deletion.double(), insertion.double()
    curves = {"fraction": as_numpy(fraction), "deletion": as_numpy(deletion), "insertion": as_numpy(insertion)}
    return (
        as_numpy(torch.trapezoid(deletion, fraction, dim=1)),
        as_numpy(torch.trapezoid(insertion, fraction, dim=1)),
        curves,
    )


_BOOTSTRAP_CELLS = 1 << 22


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows of ``matrix`` scaled to unit L2 norm, as float32."""
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def bootstrap_mean_ci(
    values: np.ndarray, n_boot: int, rng: np.random.Generator, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the column means of ``values`` [n, M] (NaN = missing, ignored).

    Rows are resampled jointly for all columns; each replicate is a weight matrix from resampled
    row counts, so the replicate means are one matrix product. Columns with < 2 values get NaN.
    """
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    n, n_metrics = values.shape
    low, high = np.full(n_metrics, np.nan), np.full(n_metrics, np.nan)
    present = np.isfinite(values)
    usable = present.sum(axis=0) >= 2
    if not usable.any() or n_boot < 1:
        return low, high
    filled = np.where(present, values, 0.0)[:, usable]
    present = present[:, usable].astype(np.float64)
    block = max(1, _BOOTSTRAP_CELLS // n)
    replicate_means = []
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            replicate_means.append((counts @ filled) / (counts @ present))
    tail = (1.0 - confidence) / 2.0
    low[usable], high[usable] = np.nanquantile(np.concatenate(replicate_means), [tail, 1.0 - tail], axis=0)
    return low, high


def summarise(
    per_map: pd.DataFrame,
    by: Sequence[str] = ("model", "method"),
    metrics: Sequence[str] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean and percentile-bootstrap CI of every metric per group, one row per (group, metric).

    ``metrics`` defaults to every numeric column not in ``by``. Rows of a group are resampled
    jointly for all metrics by :func:`cliplens.metrics.bootstrap_mean_ci` (NaN = missing; CI NaN
    with fewer than 2 values); each group gets a fresh generator seeded with ``seed``, so
    results do not depend on the other groups. Columns: ``*by, metric, mean, ci_low, ci_high, n``.
    """
    by = list(by)
    if metrics is None:
        metrics = [c for c in per_map.select_dtypes("number").columns if c not in by]
    rows = []
    for key, group in per_map.groupby(by, sort=True):
        values = group[list(metrics)].to_numpy(dtype=np.float64)
        low, high = bootstrap_mean_ci(values, n_boot, np.random.default_rng(seed), confidence)
        for index, metric in enumerate(metrics):
            column = values[:, index][np.isfinite(values[:, index])]
            rows.append(
                {
                    **dict(zip(by, key)),
                    "metric": metric,
                    "mean": column.mean() if column.size else np.nan,
                    "ci_low": low[index],
                    "ci_high": high[index],
                    "n": column.size,
                }
            )
    return pd.DataFrame(rows, columns=[*by, "metric", "mean", "ci_low", "ci_high", "n"])
