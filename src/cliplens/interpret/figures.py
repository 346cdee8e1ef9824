"""CLIP-InterpreT analyses on top of the head decomposition (docs/methods.md).

Deterministic throughout; formulas of the labels and metrics are in docs/interpretation.md.
Arrays follow :mod:`cliplens.interpret.decompose`: stored head terms ``heads [N, n, H, D]`` for the layers
``head_layers``; head x token terms ``head_tokens [B, n, H, N, D]`` (token 0 = CLS, patches in
row-major grid order). Inputs may be numpy arrays or CPU tensors; outputs are numpy.

"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cliplens.plotting import message_figure, save_figure
from cliplens.sheets import CELL_SIDE, overlay, save_sheet, thumbnail_sheet

if TYPE_CHECKING:  # torch-based modules: imported where needed, so plotting a table needs no torch
    from cliplens.interpret.labels import HeadLabels
    from cliplens.interpret.neighbours import NeighbourRows


def plot_mean_ablation(table: pd.DataFrame, path: str | os.PathLike, random_weights: bool = False) -> list[Path]:
    """Per-layer accuracies under mean-ablation and cumulative curves (table of mean_ablation_tables)."""
    fig, (single, cumulative) = plt.subplots(1, 2, figsize=(11, 4))
    baseline = float(table.loc[table["ablation"] == "none", "accuracy"].iloc[0])
    for axis, kinds in ((single, ("attn", "mlp")), (cumulative, ("attn_upto", "mlp_upto", "all_upto"))):
        for kind in kinds:
            rows = table[table["ablation"] == kind]
            axis.plot(rows["layer"], rows["accuracy"], marker="o", label=kind)
        axis.axhline(baseline, color="grey", linestyle="--", label="no ablation")
        axis.set_xlabel("layer")
        axis.set_ylabel("zero-shot accuracy")
        axis.legend()
    single.set_title("one layer mean-ablated")
    cumulative.set_title("layers 0..l mean-ablated")
    return save_figure(fig, path, random_weights=random_weights)


def plot_textspan(spans: pd.DataFrame, path: str | os.PathLike, random_weights: bool = False, columns: int = 4) -> list[Path]:
    """One panel per head listing its TEXTSPAN texts with the variance each explains."""
    groups = list(spans.groupby(["layer", "head"], sort=True))
    rows = -(-len(groups) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 0.25 * spans["rank"].max() * rows + 2 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, ((layer, head), group) in zip(axes.ravel(), groups):
        lines = [f"{v:5.1%}  {text}" for text, v in zip(group["text"], group["variance_explained"])]
        axis.set_title(f"L{layer}.H{head}", fontsize=9, loc="left")
        axis.text(0, 1, "\n".join(lines), va="top", fontsize=7, family="monospace", transform=axis.transAxes)
    return save_figure(fig, path, random_weights=random_weights)


def plot_head_properties(labels: HeadLabels, path: str | os.PathLike, random_weights: bool = False) -> list[Path]:
    """Heatmap of each head's property distribution, its label marked."""
    fig, axis = plt.subplots(figsize=(0.6 * len(labels.properties) + 2, 0.3 * len(labels.heads) + 1.5))
    image = axis.imshow(labels.distribution, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    axis.scatter(labels.distribution.argmax(axis=1), np.arange(len(labels.heads)), marker="x", color="red", s=12)
    axis.set_xticks(range(len(labels.properties)), labels.properties, rotation=60, ha="right")
    axis.set_yticks(range(len(labels.heads)), [f"L{l}.H{h}" for l, h in labels.heads], fontsize=7)
    fig.colorbar(image, ax=axis, label="share of the head's texts")
    return save_figure(fig, path, random_weights=random_weights)


def plot_interpretability_metrics(metrics: pd.DataFrame, path: str | os.PathLike, random_weights: bool = False) -> list[Path]:
    """Bar chart of the metrics with their bootstrap confidence intervals."""
    fig, axis = plt.subplots(figsize=(6, 3.5))
    errors = np.stack([metrics["value"] - metrics["ci_low"], metrics["ci_high"] - metrics["value"]])
    axis.bar(metrics["metric"], metrics["value"], yerr=errors, capsize=4, color="tab:blue")
    axis.set_ylim(0, 1)
    axis.set_ylabel("value (95% bootstrap CI)")
    axis.tick_params(axis="x", labelrotation=15)
    return save_figure(fig, path, random_weights=random_weights)


def plot_neighbours(
    neighbour_images: np.ndarray,
    scores: np.ndarray,
    path: str | os.PathLike,
    query_images: np.ndarray | None = None,
    query_titles: Sequence[str] | None = None,
    random_weights: bool = False,
) -> list[Path]:
    """Rows of queries (an image, or just a title such as a text) and their neighbours, each with its
    score under it (a sheet of pictures, :mod:`cliplens.sheets`).

    ``neighbour_images [Q, k, h, w, 3]``, ``scores [Q, k]``, ``query_images [Q, h, w, 3]``.
    """
    num_queries, k = scores.shape
    query = ["query"] if query_images is not None else []
    sheet = thumbnail_sheet(
        [[*([query_images[q]] if query_images is not None else []), *neighbour_images[q]] for q in range(num_queries)],
        columns=[*query, *(f"neighbour {i + 1}" for i in range(k))],
        rows=list(query_titles) if query_titles is not None else None,
        cells=[[*([""] * len(query)), *(f"{score:.3f}" for score in scores[q])] for q in range(num_queries)],
        side=CELL_SIDE,
        random_weights=random_weights,
    )
    return save_sheet(sheet, path)


def plot_head_maps(
    image: np.ndarray,
    maps: np.ndarray,
    head_layers: Sequence[int],
    title: str,
    path: str | os.PathLike,
    diverging: bool = False,
    random_weights: bool = False,
) -> list[Path]:
    """Overlay each head's map [n, H, gh, gw] (topic or contrastive) on the image [h, w, 3]: a row per
    layer, a column per head (a sheet of pictures); each map spans its own range (diverging maps:
    symmetric about 0, coolwarm)."""
    from cliplens.stored_maps import upsample_maps

    num_layers, num_heads = maps.shape[:2]
    upsampled = upsample_maps(maps, image.shape[:2])

    def drawn(values: np.ndarray) -> np.ndarray:
        limit = float(np.abs(values).max()) or 1.0
        if diverging:
            return overlay(image, values, cmap="coolwarm", vmin=-limit, vmax=limit)
        return overlay(image, values, cmap="jet")

    sheet = thumbnail_sheet(
        [[drawn(upsampled[i, h]) for h in range(num_heads)] for i in range(num_layers)],
        columns=[f"H{h}" for h in range(num_heads)],
        rows=[f"L{layer}" for layer in head_layers],
        side=CELL_SIDE,
        title=title,
        random_weights=random_weights,
    )
    return save_sheet(sheet, path)


def plot_neighbour_rows(
    rows: NeighbourRows,
    images: np.ndarray,
    image_rows: np.ndarray,
    path: str | os.PathLike,
    empty_message: str,
    random_weights: bool = False,
) -> list[Path]:
    """Draw the rows with :func:`cliplens.interpret.figures.plot_neighbours`; ``images[i]`` shows store row
    ``image_rows[i]`` (sorted). Without any row, a figure with ``empty_message``."""
    if not rows.titles:
        return message_figure(empty_message, path, random_weights)
    query_images = images[np.searchsorted(image_rows, rows.queries)] if rows.queries is not None else None
    return plot_neighbours(
        images[np.searchsorted(image_rows, rows.indices)],
        rows.scores,
        path,
        query_images=query_images,
        query_titles=rows.titles,
        random_weights=random_weights,
    )
