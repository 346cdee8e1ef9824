"""CLIP-InterpreT analyses on top of the head decomposition (docs/algorithms.md section 4).

Deterministic throughout; formulas of the labels and metrics are in docs/interpretation.md.
Arrays follow :mod:`cliplens.decompose`: stored head terms ``heads [N, n, H, D]`` for the layers
``head_layers``; head x token terms ``head_tokens [B, n, H, N, D]`` (token 0 = CLS, patches in
row-major grid order). Inputs may be numpy arrays or CPU tensors; outputs are numpy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.special import entr

from cliplens.models import LoadedModel
from cliplens.plotting import save_figure
from cliplens.prompts import encode_prompts

ArrayLike = np.ndarray | torch.Tensor


def _numpy(array: ArrayLike) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().float().numpy()
    return np.asarray(array, dtype=np.float32)


def _unit(array: np.ndarray) -> np.ndarray:
    return array / np.maximum(np.linalg.norm(array, axis=-1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------- property labels


@dataclass
class PropertyEmbeddings:
    """Embedded property descriptions: ``embeddings [Q, D]`` (normalised), ``owner [Q]`` indexes ``names``."""

    names: list[str]
    embeddings: np.ndarray
    owner: np.ndarray


def encode_properties(loaded: LoadedModel, properties: dict[str, list[str]]) -> PropertyEmbeddings:
    """Embed every description of every property (see :func:`cliplens.textpools.load_properties`)."""
    names = list(properties)
    descriptions = [text for name in names for text in properties[name]]
    owner = np.repeat(np.arange(len(names)), [len(properties[name]) for name in names])
    return PropertyEmbeddings(names, _numpy(encode_prompts(loaded, descriptions)), owner)


def text_property_similarity(texts: ArrayLike, properties: PropertyEmbeddings) -> np.ndarray:
    """s(t, p) = max over the descriptions d of p of cos(t, d): [M, P]."""
    similarity = _unit(_numpy(texts)) @ _unit(properties.embeddings).T  # [M, Q]
    return np.stack([similarity[:, properties.owner == p].max(axis=1) for p in range(len(properties.names))], axis=1)


@dataclass
class HeadLabels:
    """Property distribution of each head: ``distribution [S, P]`` (rows sum to 1) for ``heads [S, 2]``."""

    heads: np.ndarray
    properties: list[str]
    distribution: np.ndarray

    @property
    def labels(self) -> list[str]:
        """Each head's property: argmax of its distribution (ties: first property)."""
        return [self.properties[i] for i in self.distribution.argmax(axis=1)]

    def to_frame(self) -> pd.DataFrame:
        """One row per head: layer, head, label, consistency, then the share of each property."""
        frame = pd.DataFrame({"layer": self.heads[:, 0], "head": self.heads[:, 1], "label": self.labels})
        frame["consistency"] = self.distribution.max(axis=1)
        shares = pd.DataFrame(self.distribution, columns=[f"share_{name}" for name in self.properties])
        return pd.concat([frame, shares], axis=1)

    def head_mask(self, prop: str, head_layers: Sequence[int], num_heads: int) -> np.ndarray:
        """Boolean [n, H] mask of the heads labelled ``prop`` (layout of stored ``heads``)."""
        mask = np.zeros((len(head_layers), num_heads), dtype=bool)
        layer_position = {layer: i for i, layer in enumerate(head_layers)}
        for (layer, head), label in zip(self.heads, self.labels):
            if label == prop:
                mask[layer_position[int(layer)], int(head)] = True
        return mask


def label_heads(
    spans: pd.DataFrame,
    pool_embeddings: ArrayLike,
    properties: PropertyEmbeddings,
    weighting: str = "variance",
) -> HeadLabels:
    """Property distribution of each head from its TEXTSPAN texts.

    ``spans`` is the output of :func:`cliplens.textspan.textspan_heads` (``text_index`` into
    ``pool_embeddings [M, D]``). Each text goes to its most similar property; a head's
    distribution is the share of its texts per property, weighted by variance explained
    (``weighting='variance'``) or uniformly (``'uniform'``).
    """
    if weighting not in ("variance", "uniform"):
        raise ValueError(f"weighting {weighting!r} unknown; valid: variance, uniform")
    assigned = text_property_similarity(pool_embeddings, properties).argmax(axis=1)[spans["text_index"].to_numpy()]
    weights = spans["variance_explained"].to_numpy() if weighting == "variance" else np.ones(len(spans))
    head_keys, head_rows = np.unique(spans[["layer", "head"]].to_numpy(), axis=0, return_inverse=True)
    distribution = np.zeros((len(head_keys), len(properties.names)))
    np.add.at(distribution, (head_rows.ravel(), assigned), weights)
    distribution /= distribution.sum(axis=1, keepdims=True)
    return HeadLabels(head_keys, list(properties.names), distribution)


# --------------------------------------------------------------------------- metrics


def _normalised_entropy(probabilities: np.ndarray, axis: int) -> np.ndarray:
    """Shannon entropy along ``axis`` divided by log(size of that axis); 0 log 0 = 0."""
    return entr(probabilities).sum(axis=axis) / np.log(probabilities.shape[axis])


def _metric_values(distribution: np.ndarray) -> dict[str, np.ndarray]:
    """The three metrics of docs/interpretation.md for one or many [..., S, P] distributions."""
    mass = distribution.sum(axis=-2, keepdims=True)  # [..., 1, P]
    over_heads = np.divide(distribution, mass, out=np.zeros_like(distribution), where=mass > 0)
    sharing = _normalised_entropy(over_heads, axis=-2)  # [..., P]
    present = mass[..., 0, :] > 0
    return {
        "consistency": distribution.max(axis=-1).mean(axis=-1),
        "head_disentanglement": 1.0 - _normalised_entropy(distribution, axis=-1).mean(axis=-1),
        "property_disentanglement": 1.0 - (sharing * present).sum(axis=-1) / present.sum(axis=-1),
    }


def interpretability_metrics(
    labels: HeadLabels | np.ndarray,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Within-head consistency and cross-head disentanglement with percentile bootstrap CIs.

    The bootstrap resamples heads (rows of the distribution) with replacement, ``n_boot`` times
    with a seeded generator. Columns: metric, value, ci_low, ci_high, n_heads, n_boot.
    """
    distribution = labels.distribution if isinstance(labels, HeadLabels) else np.asarray(labels, dtype=np.float64)
    num_heads, num_properties = distribution.shape
    if num_heads < 2 or num_properties < 2:
        raise ValueError("metrics need at least two heads and two properties")
    point = _metric_values(distribution)
    resamples = np.random.default_rng(seed).integers(0, num_heads, size=(n_boot, num_heads))
    boot = _metric_values(distribution[resamples])
    tail = 100 * (1 - confidence) / 2
    rows = [
        (name, float(value), *np.percentile(boot[name], [tail, 100 - tail]), num_heads, n_boot)
        for name, value in point.items()
    ]
    return pd.DataFrame(rows, columns=["metric", "value", "ci_low", "ci_high", "n_heads", "n_boot"])


# --------------------------------------------------------------------------- nearest neighbours


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k highest scores per row (ties: lower index first)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def nearest_neighbours(
    queries: ArrayLike, database: ArrayLike, k: int = 5, exclude: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine nearest neighbours: (indices [Q, k], similarities [Q, k]) of queries [Q, D] in [N, D].

    ``exclude[q]`` (a database index, e.g. the query itself) is never returned for query q.
    """
    scores = _unit(_numpy(queries)) @ _unit(_numpy(database)).T
    if exclude is not None:
        scores[np.arange(len(scores)), np.asarray(exclude)] = -np.inf
    return _top_k(scores, k)


def property_representation(heads: ArrayLike, mask: np.ndarray) -> np.ndarray:
    """Sum of the contributions of the heads selected by ``mask [n, H]``: [N, n, H, D] -> [N, D]."""
    return np.einsum("bnhd,nh->bd", _numpy(heads), mask.astype(np.float32))


def property_neighbours(
    heads: ArrayLike, mask: np.ndarray, query_indices: Sequence[int], k: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbours of database images (by index, excluded from their own list) using only the
    heads of one property (``mask [n, H]``, e.g. :meth:`HeadLabels.head_mask`)."""
    if not mask.any():
        raise ValueError("no head carries this property")
    representation = property_representation(heads, mask)
    return nearest_neighbours(representation[np.asarray(query_indices)], representation, k, exclude=query_indices)


def head_image_neighbours(
    head_matrix: ArrayLike, query_indices: Sequence[int], k: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Per-head image neighbours: database [N, D] of one head's terms, ranked by cosine to the query's."""
    matrix = _numpy(head_matrix)
    return nearest_neighbours(matrix[np.asarray(query_indices)], matrix, k, exclude=query_indices)


def head_text_neighbours(head_matrix: ArrayLike, texts: ArrayLike, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per-head images of texts [T, D]: database [N, D] ranked by the dot product t . c_lh."""
    return _top_k(_numpy(texts) @ _numpy(head_matrix).T, k)


# --------------------------------------------------------------------------- spatial maps


def _patch_terms(head_tokens: ArrayLike, grid_size: tuple[int, int]) -> np.ndarray:
    tokens = _numpy(head_tokens)
    if tokens.shape[-2] != 1 + grid_size[0] * grid_size[1]:
        raise ValueError(f"{tokens.shape[-2]} tokens do not match grid {grid_size} plus CLS")
    return tokens[..., 1:, :]


def topic_maps(head_tokens: ArrayLike, texts: ArrayLike, grid_size: tuple[int, int]) -> np.ndarray:
    """Per-head topic maps c_lhj . t over patch tokens: [B, n, H, N, D] x [T, D] -> [B, n, H, T, gh, gw]."""
    maps = np.einsum("bnhjd,td->bnhtj", _patch_terms(head_tokens, grid_size), _numpy(texts))
    return maps.reshape(*maps.shape[:-1], *grid_size)


def contrastive_maps(head_tokens: ArrayLike, text: ArrayLike, other: ArrayLike, grid_size: tuple[int, int]) -> np.ndarray:
    """map(t1) - map(t2) per head: [B, n, H, gh, gw]."""
    difference = (_numpy(text) - _numpy(other)).reshape(1, -1)
    return topic_maps(head_tokens, difference, grid_size)[:, :, :, 0]


def zero_shot_segmentation(
    head_tokens: ArrayLike,
    class_embeddings: ArrayLike,
    grid_size: tuple[int, int],
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Class maps h_j(y) = sum_lh c_lhj . t_y - mean_c sum_lh c_lhj . t_c: [B, C, gh, gw].

    Sums over the stored token layers' heads (or those selected by ``mask [n, H]``).
    """
    patches = _patch_terms(head_tokens, grid_size)
    weights = np.ones(patches.shape[1:3], np.float32) if mask is None else mask.astype(np.float32)
    summed = np.einsum("bnhjd,nh->bjd", patches, weights)
    scores = summed @ _numpy(class_embeddings).T  # [B, J, C]
    scores -= scores.mean(axis=-1, keepdims=True)
    return scores.transpose(0, 2, 1).reshape(len(scores), -1, *grid_size)


def upsample_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of maps [..., gh, gw] to [..., size]."""
    flat = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).reshape(-1, 1, *maps.shape[-2:])
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*maps.shape[:-2], *size).numpy()


def segment(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Per-pixel class index: argmax over C of the upsampled class maps [B, C, gh, gw] -> [B, *size]."""
    return upsample_maps(maps, size).argmax(axis=1)


# --------------------------------------------------------------------------- plots


def _image(ax: plt.Axes, image: np.ndarray) -> None:
    ax.imshow(np.clip(image, 0, 255 if image.dtype == np.uint8 else 1))
    ax.set_xticks([])
    ax.set_yticks([])


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
    """Rows of queries (an image, or just a title such as a text) and their neighbours.

    ``neighbour_images [Q, k, h, w, 3]``, ``scores [Q, k]``, ``query_images [Q, h, w, 3]``.
    """
    num_queries, k = scores.shape
    offset = 1 if query_images is not None else 0
    fig, axes = plt.subplots(num_queries, k + offset, figsize=(2 * (k + offset), 2.2 * num_queries), squeeze=False)
    for q in range(num_queries):
        if query_images is not None:
            _image(axes[q, 0], query_images[q])
            axes[q, 0].set_title("query", fontsize=8)
        if query_titles is not None:
            axes[q, 0].set_ylabel(query_titles[q], fontsize=8)
        for i in range(k):
            _image(axes[q, offset + i], neighbour_images[q, i])
            axes[q, offset + i].set_title(f"{scores[q, i]:.3f}", fontsize=8)
    return save_figure(fig, path, random_weights=random_weights)


def plot_head_maps(
    image: np.ndarray,
    maps: np.ndarray,
    head_layers: Sequence[int],
    title: str,
    path: str | os.PathLike,
    diverging: bool = False,
    random_weights: bool = False,
) -> list[Path]:
    """Overlay each head's map [n, H, gh, gw] (topic or contrastive) on the image [h, w, 3]."""
    num_layers, num_heads = maps.shape[:2]
    size = image.shape[:2]
    upsampled = upsample_maps(maps, size)
    fig, axes = plt.subplots(num_layers, num_heads, figsize=(2 * num_heads, 2 * num_layers + 0.5), squeeze=False)
    for (i, h), axis in np.ndenumerate(axes):
        values = upsampled[i, h]
        limit = np.abs(values).max() or 1.0
        _image(axis, image)
        axis.imshow(values, cmap="coolwarm" if diverging else "jet", alpha=0.5,
                    vmin=-limit if diverging else values.min(), vmax=limit if diverging else values.max())
        axis.set_title(f"L{head_layers[i]}.H{h}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, random_weights=random_weights)


def plot_segmentation(
    image: np.ndarray, segmentation: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, random_weights: bool = False
) -> list[Path]:
    """Image beside its per-pixel class map [h, w] with a legend of the classes present."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4))
    _image(left, image)
    colours = plt.get_cmap("tab20", len(class_names))
    right.imshow(segmentation, cmap=colours, vmin=-0.5, vmax=len(class_names) - 0.5, interpolation="nearest")
    right.set_xticks([])
    right.set_yticks([])
    present = np.unique(segmentation)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(c)) for c in present]
    right.legend(handles, [class_names[c] for c in present], loc="center left", bbox_to_anchor=(1, 0.5), fontsize=8)
    return save_figure(fig, path, random_weights=random_weights)
