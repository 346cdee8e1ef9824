"""Figures for explanation maps: overlays, segmentations, metric summaries, deletion/insertion, sanity checks.

Every function draws one figure, writes it (plots as PNG + PDF through :func:`cliplens.plotting.save_figure`,
the overlays as a sheet of pictures through :func:`cliplens.sheets.save_sheet`) and returns the written paths; ``random_weights=True`` stamps it as made with random weights.
Images are ``[N, H, W, 3]`` (float in [0, 1] or uint8); maps are ``[..., H, W]`` in [0, 1].

"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cliplens.metrics import as_numpy
from cliplens.plotting import save_figure
from cliplens.sheets import CELL_SIDE, overlay, save_sheet, thumbnail_sheet


def mean_and_sem(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the mean along ``axis`` (NaNs ignored)."""
    count = np.sum(~np.isnan(values), axis=axis)
    return np.nanmean(values, axis=axis), np.nanstd(values, axis=axis) / np.sqrt(np.maximum(count, 1))


def overlay_grid(
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    prompts: Sequence[str] | Sequence[Sequence[str]],
    path: str | os.PathLike,
    random_weights: bool = False,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> list[Path]:
    """Rows: images; columns: the image, then each method's map for each prompt, drawn over the
    image (a sheet of pictures, :mod:`cliplens.sheets`; PNG only unless gallery PDFs are on).

    ``maps`` is ``{method: [N, P, H, W]}`` in [0, 1] (e.g. raw CLIP, Surgery, a gradient baseline)
    and ``prompts`` holds P prompts shared by all images (named above the columns), or one list of
    P prompts per image (named under each map).
    """
    images = as_numpy(images)
    methods = list(maps)
    per_method = {m: as_numpy(maps[m]) for m in methods}
    n_images, n_prompts = per_method[methods[0]].shape[:2]
    shared = isinstance(prompts[0], str)
    row_prompts = [list(prompts)] * n_images if shared else [list(p) for p in prompts]
    cells = [(p, method) for p in range(n_prompts) for method in methods]
    sheet = thumbnail_sheet(
        [
            [
                images[row],
                *(overlay(images[row], per_method[m][row, p], cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0) for p, m in cells),
            ]
            for row in range(n_images)
        ],
        columns=["image", *(f"{method}\n{row_prompts[0][p]!r}" if shared else method for p, method in cells)],
        cells=None if shared else [["", *(repr(row_prompts[row][p]) for p, _ in cells)] for row in range(n_images)],
        side=CELL_SIDE,
        random_weights=random_weights,
    )
    return save_sheet(sheet, path)


def deletion_insertion_figure(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    path: str | os.PathLike,
    random_weights: bool = False,
) -> list[Path]:
    """Deletion and insertion panels: mean curve +- standard error per label, mean AUC in the legend.

    ``curves`` maps a label (e.g. ``"ViT-B-16 / surgery"``) to the ``curves`` dict returned by
    :func:`cliplens.metrics.deletion_insertion`.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.5))
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for label, curve in curves.items():
            fraction, scores = np.asarray(curve["fraction"]), np.asarray(curve[kind])
            mean, sem = mean_and_sem(scores)
            auc = np.trapezoid(scores, fraction, axis=1).mean()
            ax.plot(fraction, mean, label=f"{label} (AUC {auc:.3f})")
            ax.fill_between(fraction, mean - sem, mean + sem, alpha=0.2)
        ax.set_xlabel("fraction of pixels " + ("removed" if kind == "deletion" else "inserted"))
        ax.set_ylabel("score")
        ax.set_title(kind)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, random_weights=random_weights)


def sanity_check_figure(
    similarity: pd.DataFrame,
    path: str | os.PathLike,
    measures: Sequence[str] = ("spearman", "ssim"),
    hue: str = "method",
    random_weights: bool = False,
) -> list[Path]:
    """Similarity to the original maps along the cascading randomisation, one panel per measure.

    ``similarity`` has one row per map with a ``stage`` column (x axis, in order of first
    appearance), a ``hue`` column and the ``measures`` columns (from ``map_similarity``).
    """
    stages = list(dict.fromkeys(similarity["stage"]))
    fig, axes = plt.subplots(1, len(measures), figsize=(4.5 * len(measures), 3.5), squeeze=False)
    for ax, measure in zip(axes[0], measures):
        for hue_value, rows in similarity.groupby(hue, sort=False):
            by_stage = rows.groupby("stage")[measure]
            mean = by_stage.mean().reindex(stages).to_numpy()
            sem = by_stage.sem().reindex(stages).fillna(0.0).to_numpy()
            ax.plot(range(len(stages)), mean, marker="o", label=str(hue_value))
            ax.fill_between(range(len(stages)), mean - sem, mean + sem, alpha=0.2)
        ax.set_xticks(range(len(stages)), stages, rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("randomised down to")
        ax.set_ylabel(f"{measure} vs original maps")
        ax.axhline(0.0, color="grey", linewidth=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, random_weights=random_weights)
