"""Plots of the perturbation analysis; each saves through ``save_figure`` (PNG and PDF) and returns the figure.
The pictures (previews, susceptibility galleries) are sheets drawn by :mod:`cliplens.perturbation.galleries`.

Inputs are the tables of ``cliplens.perturbation.statistics`` and ``cliplens.perturbation.drift`` (columns: docs/statistics.md).
Titles name the model and the dataset; ``random_weights=True`` stamps the figure as such.

"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm

from cliplens.perturbation.drift import (
    Trajectories,
    drift_label_names,
    label_flips,
    probability_columns,
)
from cliplens.perturbation.statistics import select_model
from cliplens.planning import CLEAN
from cliplens.plotting import save_figure

METRIC_LABELS = {
    "self_similarity": "self-similarity cos(e^{f,s}, e^0)",
    "alignment": "alignment cos(e, t_y)",
    "alignment_change": "alignment change vs clean",
    "top1": "top-1 accuracy",
    "top5": "top-5 accuracy",
    "top1_drop": "top-1 accuracy drop vs clean",
    "top5_drop": "top-5 accuracy drop vs clean",
    "rank": "rank of the true label",
    "margin": "logit margin (true - best other)",
    "true_prob": "softmax probability of the true label",
}


def _finish(fig: plt.Figure, path: str | os.PathLike, title: str, model: str, dataset: str, random_weights: bool) -> plt.Figure:
    """Title the figure (model, dataset) above everything and save it."""
    fig.text(0.5, 1.0, f"{title}\nmodel: {model}   dataset: {dataset}", ha="center", va="bottom", fontsize=12, weight="bold")
    save_figure(fig, path, random_weights=random_weights)
    return fig


def _severity_curve(aggregate: pd.DataFrame, family: str, metric: str) -> pd.DataFrame:
    """Mean and CI of ``metric`` over severity for one family, the clean row as severity 0."""
    columns = ["severity", f"{metric}_mean", f"{metric}_ci_low", f"{metric}_ci_high"]
    rows = aggregate[aggregate["family"].isin([family, CLEAN])]
    return rows[columns].sort_values("severity").set_axis(["severity", "mean", "low", "high"], axis=1)


def _perturbed_families(aggregate: pd.DataFrame) -> list[str]:
    """Perturbation families in the table, sorted, without the clean reference."""
    return sorted(set(aggregate["family"]) - {CLEAN})


def _draw_curve(ax: plt.Axes, curve: pd.DataFrame, label: str, color, linestyle: str = "-") -> None:
    """A mean line with markers and its confidence band."""
    ax.plot(curve["severity"], curve["mean"], marker="o", ms=3, color=color, ls=linestyle, label=label)
    ax.fill_between(curve["severity"], curve["low"], curve["high"], color=color, alpha=0.15, linewidth=0)


def plot_drop_heatmaps(
    aggregate: pd.DataFrame, path: str | os.PathLike, *, dataset: str, random_weights: bool, model: str | None = None
) -> plt.Figure:
    """Family x severity heatmaps of the top-1 accuracy drop and the embedding drop 1 - self-similarity."""
    table, model = select_model(aggregate, model)
    table = table[table["family"] != CLEAN]
    table = table.assign(embedding_drop=1.0 - table["self_similarity_mean"])
    panels = [
        ("top1_drop_mean", "top-1 accuracy drop (clean - perturbed)", "RdBu_r"),
        ("embedding_drop", "embedding drop 1 - cos(e^{f,s}, e^0)", "magma_r"),
    ]
    families = _perturbed_families(table)
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.5 + 0.38 * len(families)), layout="constrained")
    for ax, (column, label, cmap) in zip(axes, panels):
        grid = table.pivot_table(index="family", columns="severity", values=column, dropna=False).reindex(families)
        values = grid.to_numpy(dtype=np.float64)
        limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
        vmin = -limit if cmap == "RdBu_r" else 0.0
        image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=limit or 1.0, aspect="auto")
        for (row, col), value in np.ndenumerate(values):
            if np.isfinite(value):
                ax.text(
                    col,
                    row,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if abs(value) > 0.6 * (limit or 1.0) else "black",
                )
        ax.set_xticks(range(len(grid.columns)), [str(s) for s in grid.columns])
        ax.set_yticks(range(len(families)), families)
        ax.set_xlabel("severity")
        ax.set_title(label if np.isfinite(values).any() else f"{label}\n(no labeled images)")
        fig.colorbar(image, ax=ax, shrink=0.8)
    return _finish(fig, path, "Drop under perturbation, per family and severity", model, dataset, random_weights)


def plot_severity_curves(
    aggregate: pd.DataFrame,
    metric: str,
    path: str | os.PathLike,
    *,
    dataset: str,
    random_weights: bool,
    model: str | None = None,
) -> plt.Figure:
    """``metric`` mean vs severity (0 = clean) with its bootstrap CI band, one line per family."""
    table, model = select_model(aggregate, model)
    families = _perturbed_families(table)
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, 20))
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for index, family in enumerate(families):
        _draw_curve(ax, _severity_curve(table, family, metric), family, colors[index % 20], ["-", "--", ":"][index // 20 % 3])
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="family")
    title = f"{METRIC_LABELS.get(metric, metric)} over severity (mean, bootstrap CI)"
    return _finish(fig, path, title, model, dataset, random_weights)


def plot_model_comparison(
    aggregate: pd.DataFrame, metric: str, path: str | os.PathLike, *, dataset: str, random_weights: bool
) -> plt.Figure:
    """``metric`` vs severity per model, one panel per family (needs a ``model`` column)."""
    if "model" not in aggregate.columns:
        raise ValueError("model comparison needs a 'model' column")
    families = _perturbed_families(aggregate)
    models = sorted(aggregate["model"].unique())
    n_cols = min(4, len(families))
    n_rows = -(-len(families) // n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.2 * n_cols, 2.6 * n_rows + 0.6), sharex=True, sharey=True, squeeze=False, layout="constrained"
    )
    colors = plt.get_cmap("tab10")(np.arange(len(models)) % 10)
    for ax, family in zip(axes.flat, families):
        for color, name in zip(colors, models):
            _draw_curve(ax, _severity_curve(aggregate[aggregate["model"] == name], family, metric), name, color)
        ax.set_title(family, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(families) :]:
        ax.set_visible(False)
    fig.supxlabel("severity (0 = clean)")
    fig.supylabel(METRIC_LABELS.get(metric, metric))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", title="model")
    title = f"Model comparison: {METRIC_LABELS.get(metric, metric)}"
    return _finish(fig, path, title, ", ".join(models), dataset, random_weights)


def plot_drift_probabilities(
    drift: pd.DataFrame,
    image_ids: Sequence[str],
    path: str | os.PathLike,
    *,
    family: str,
    dataset: str,
    random_weights: bool,
    model: str | None = None,
) -> plt.Figure:
    """Per image: drift-label probabilities and JS divergence from clean over severity; the first flip marked."""
    table, model = select_model(drift, model)
    table = table[(table["family"] == family) & table["image_id"].isin(image_ids)]
    labels = drift_label_names(table)
    flips = label_flips(table).set_index("image_id")
    colors = plt.get_cmap("tab10")(np.arange(len(labels)) % 10)
    n_cols = 2 if len(image_ids) == 4 else min(3, len(image_ids))  # four images: 2 x 2, no empty panel
    n_rows = -(-len(image_ids) // n_cols)
    width, height = 4 * n_cols, 3 * n_rows + 0.8
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, height), sharex=True, sharey=True, squeeze=False)
    # fixed margins in inches instead of a layout engine (a tenth of a second per figure): shared
    # axes keep tick labels on the outer panels only; the saved PNG is cropped to what is drawn
    fig.subplots_adjust(
        left=0.75 / width, right=1 - 0.1 / width, bottom=0.7 / height, top=1 - 0.25 / height, wspace=0.06, hspace=0.22
    )
    for ax, image_id in zip(axes.flat, image_ids):
        rows = table[table["image_id"] == image_id].sort_values("severity")
        for color, label, column in zip(colors, labels, probability_columns(labels)):
            ax.plot(rows["severity"], rows[column], marker="o", ms=3, color=color, label=label)
        ax.plot(rows["severity"], rows["js_divergence"], "k--", label="JS divergence from clean (bits)")
        flip = flips.loc[image_id] if image_id in flips.index else None
        if flip is not None and flip["flipped_to"] is not None:
            at_end = flip["flip_severity"] >= rows["severity"].max()
            ax.axvline(flip["flip_severity"], color="grey", ls=":")
            ax.annotate(
                f"flip -> {flip['flipped_to']}",
                (flip["flip_severity"], 0.97),
                fontsize=7,
                ha="right" if at_end else "left",
                va="top",
                xytext=(-3 if at_end else 3, 0),
                textcoords="offset points",
            )
        ax.set_title(image_id, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(image_ids) :]:
        ax.set_visible(False)
    # the panels share both axes; fixed ticks spare a tick search per panel and draw
    axes[0, 0].set_xticks(sorted(table["severity"].unique()))
    axes[0, 0].set(ylim=(0, 1), yticks=np.linspace(0, 1, 6))
    fig.supxlabel("severity (0 = clean)", y=0.15 / height, va="bottom")
    fig.supylabel("probability over the drift labels", x=0.1 / width, ha="left")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1, 0.5), fontsize=8)
    return _finish(fig, path, f"Semantic drift under {family}", model, dataset, random_weights)


def plot_drift_trajectories(
    trajectories: Trajectories,
    image_ids: Sequence[str],
    path: str | os.PathLike,
    *,
    family: str,
    dataset: str,
    random_weights: bool,
    model: str | None = None,
) -> plt.Figure:
    """Paths of images through the 2-D PCA of drift distributions, coloured by severity, with label vertices."""
    coords, model = select_model(trajectories.coords, model)
    coords = coords[(coords["family"] == family) & coords["image_id"].isin(image_ids)]
    fig, ax = plt.subplots(figsize=(7, 6))
    fig.subplots_adjust(left=0.12, right=0.98, bottom=0.1, top=0.98)  # no layout engine; the PNG is cropped to what is drawn
    vertices = trajectories.project(np.eye(len(trajectories.label_names)))
    ax.scatter(vertices[:, 0], vertices[:, 1], marker="s", color="grey", s=25)
    for (x, y), label in zip(vertices, trajectories.label_names):
        ax.annotate(label, (x, y), fontsize=8, color="dimgrey", xytext=(4, 4), textcoords="offset points")
    levels = sorted(coords["severity"].unique()) or [0]  # severities are discrete: one colour each
    colours = plt.get_cmap("viridis", len(levels))
    norm = BoundaryNorm(np.arange(len(levels) + 1) - 0.5, len(levels))
    for image_id in image_ids:
        path_rows = coords[coords["image_id"] == image_id].sort_values("severity")
        if path_rows.empty:
            continue
        ax.plot(path_rows["pc1"], path_rows["pc2"], color="black", lw=0.8, alpha=0.6)
        level = np.searchsorted(levels, path_rows["severity"])
        ax.scatter(path_rows["pc1"], path_rows["pc2"], c=level, cmap=colours, norm=norm, s=30, zorder=3)
        ax.annotate(
            image_id,
            (path_rows["pc1"].iloc[-1], path_rows["pc2"].iloc[-1]),
            fontsize=8,
            xytext=(4, -10),
            textcoords="offset points",
        )
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=colours), ax=ax, ticks=range(len(levels)), label="severity (0 = clean)")
    bar.set_ticklabels([str(level) for level in levels])
    ratio = trajectories.explained_variance_ratio
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%} of variance)")
    ax.grid(alpha=0.3)
    title = f"Drift trajectories under {family}\n(grey squares: pure-label distributions; ids at the last severity)"
    return _finish(fig, path, title, model, dataset, random_weights)


def plot_attribute_accuracy(table: pd.DataFrame, path: str | os.PathLike, *, model: str, random_weights: bool) -> plt.Figure:
    """Per family: zero-shot accuracy of each planted attribute over severity (clean at 0, chance dashed)."""
    clean = table[table["family"] == CLEAN]
    families = [family for family in dict.fromkeys(table["family"]) if family != CLEAN]
    columns = min(len(families), 5) or 1
    rows = -(-len(families) // columns) or 1
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.6 * rows), squeeze=False, sharey=True)
    for axis in axes.ravel()[len(families) :]:
        axis.axis("off")
    for axis, family in zip(axes.ravel(), families):
        curve = pd.concat([clean, table[table["family"] == family]])
        for index, (attribute, rows_of) in enumerate(curve.groupby("attribute", sort=False)):
            colour = plt.get_cmap("tab10")(index)
            axis.plot(rows_of["severity"], rows_of["accuracy"], marker="o", color=colour, label=attribute)
            axis.axhline(rows_of["chance"].iloc[0], color=colour, linestyle=":", linewidth=0.8)
        axis.set_title(family, fontsize=9)
        axis.set_ylim(0, 1.02)
        axis.set_xlabel("severity")
    axes[0, 0].set_ylabel("zero-shot accuracy")
    axes[0, 0].legend(fontsize=7)
    return _finish(fig, path, "Planted attributes under perturbation (dotted: chance)", model, "planted", random_weights)
