"""Shared figure conventions: saving atomically, marking random-weight figures, image panels,
class colours and the one segmentation figure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")  # figures are files: no display needed, none opened
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from cliplens.io import atomic_output
from cliplens.metrics import as_numpy

RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS - not a result about any trained CLIP model"


def mark_random_weights(fig: plt.Figure) -> None:
    """Stamp a figure made with randomly initialised weights so nobody mistakes it for a finding."""
    fig.text(
        0.5,
        0.5,
        RANDOM_WEIGHTS_NOTE,
        ha="center",
        va="center",
        rotation=20,
        fontsize=14,
        color="red",
        alpha=0.35,
        weight="bold",
        zorder=1000,
    )
    # a plain line below the figure: titles and suptitles above stay as they are
    fig.text(0.5, 0.0, RANDOM_WEIGHTS_NOTE, ha="center", va="top", color="red", fontsize=9)


def save_figure(fig: plt.Figure, path: str | os.PathLike, random_weights: bool = False) -> list[Path]:
    """Save ``fig`` to ``path`` (PNG) and beside it as PDF, each via a temporary file; close it."""
    if random_weights:
        mark_random_weights(fig)
    png = Path(path)
    png.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for target in (png, png.with_suffix(".pdf")):
        with atomic_output(target) as tmp:
            fig.savefig(tmp, format=target.suffix.lstrip("."), dpi=120, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written


def message_figure(message: str, path: str | os.PathLike, random_weights: bool = False) -> list[Path]:
    """A figure that only says why there is nothing to show."""
    fig, axis = plt.subplots(figsize=(6, 1.5))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return save_figure(fig, path, random_weights=random_weights)


def _image(ax: plt.Axes, image: np.ndarray) -> None:
    ax.imshow(np.clip(image, 0, 255 if image.dtype == np.uint8 else 1))
    ax.set_xticks([])
    ax.set_yticks([])


CELL_INCHES = 2.0


IGNORED_COLOUR = (0.0, 0.0, 0.0)


def class_palette(n_colours: int) -> list[tuple[float, float, float]]:
    """``n_colours`` distinct qualitative colours (tab20, tab20b, tab20c; cycled beyond 60)."""
    # tab20* are ListedColormaps whose .colors are RGB tuples (typed as a generic ArrayLike)
    colours = [c for name in ("tab20", "tab20b", "tab20c") for c in cast(Any, plt.get_cmap(name)).colors]
    return [tuple(colours[i % len(colours)]) for i in range(n_colours)]


def segmentation_figure(
    images: np.ndarray,
    predictions: np.ndarray,
    class_names: Mapping[int, str],
    path: str | os.PathLike,
    ground_truth: np.ndarray | None = None,
    ignore_index: int | None = 0,
    random_weights: bool = False,
) -> list[Path]:
    """Rows: images; columns: image, predicted labels (and ground truth), with a class legend.

    ``predictions`` / ``ground_truth`` are class-index maps ``[N, H, W]``; each class present
    gets its own colour, ``ignore_index`` is drawn black.
    """
    images, predictions = as_numpy(images), as_numpy(predictions)
    label_maps = {"prediction": predictions}
    if ground_truth is not None:
        label_maps["ground truth"] = as_numpy(ground_truth)
    present = np.unique(np.concatenate([m.ravel() for m in label_maps.values()]))
    present = present[present != ignore_index] if ignore_index is not None else present
    colours = dict(zip(present.tolist(), class_palette(len(present))))
    max_id = max(int(m.max()) for m in label_maps.values())
    colour_index = np.zeros(max_id + 1, dtype=np.int64)  # index 0 = ignored / black
    colour_index[present] = np.arange(1, len(present) + 1)
    colour_map = ListedColormap([IGNORED_COLOUR, *colours.values()])
    n_images, n_cols = predictions.shape[0], 1 + len(label_maps)
    fig, axes = plt.subplots(n_images, n_cols, figsize=(CELL_INCHES * n_cols + 2.5, CELL_INCHES * n_images), squeeze=False)
    for row in range(n_images):
        axes[row, 0].imshow(images[row])
        axes[row, 0].set_title("image", fontsize=8)
        for col, (title, labels) in enumerate(label_maps.items(), start=1):
            axes[row, col].imshow(colour_index[labels[row]], cmap=colour_map, vmin=0, vmax=len(colours), interpolation="nearest")
            axes[row, col].set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    handles = [Patch(color=c, label=class_names.get(i, str(i))) for i, c in colours.items()]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path, random_weights=random_weights)


def summary_figure(
    summary: pd.DataFrame,
    path: str | os.PathLike,
    group: str = "model",
    hue: str = "method",
    random_weights: bool = False,
) -> list[Path]:
    """One bar panel per metric: bars per ``group`` x ``hue`` with bootstrap CI error bars.

    ``summary`` is the output of :func:`cliplens.metrics.summarise` (``metric``, ``mean``,
    ``ci_low``, ``ci_high`` and the ``group`` / ``hue`` columns).
    """
    metrics = list(dict.fromkeys(summary["metric"]))
    groups, hues = list(dict.fromkeys(summary[group])), list(dict.fromkeys(summary[hue]))
    width = 0.8 / len(hues)
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(max(3.0, 0.6 * len(groups) * len(hues)) * len(metrics), 3.2), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics):
        rows = summary[summary["metric"] == metric].set_index([group, hue])
        for h, (hue_value, colour) in enumerate(zip(hues, class_palette(len(hues)))):
            table = rows.xs(hue_value, level=hue).reindex(groups)
            errors = np.stack([table["mean"] - table["ci_low"], table["ci_high"] - table["mean"]])
            ax.bar(
                np.arange(len(groups)) + (h - (len(hues) - 1) / 2) * width,
                table["mean"],
                width,
                yerr=errors,
                capsize=3,
                color=colour,
                label=str(hue_value),
            )
        ax.set_xticks(np.arange(len(groups)), [str(g) for g in groups], rotation=20, fontsize=8)
        ax.set_title(metric, fontsize=9)
    axes[0, -1].legend(fontsize=7, title=hue, title_fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, random_weights=random_weights)


def training_curve_figure(history: pd.DataFrame, path: str | os.PathLike) -> list[Path]:
    """Loss per step and, where evaluated, held-out zero-shot accuracy per attribute."""
    fig, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.5))
    loss_axis.plot(history["step"], history["loss"], linewidth=0.8)
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("contrastive loss")
    evaluated = history.dropna(axis=0, subset=[c for c in history.columns if c.startswith("accuracy_")][:1])
    for column in (c for c in history.columns if c.startswith("accuracy_")):
        accuracy_axis.plot(evaluated["step"], evaluated[column], marker="o", label=column.removeprefix("accuracy_"))
    accuracy_axis.set_xlabel("step")
    accuracy_axis.set_ylabel("held-out zero-shot accuracy")
    accuracy_axis.set_ylim(0, 1)
    accuracy_axis.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
