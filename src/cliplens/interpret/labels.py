"""Property labels of heads from their TEXTSPAN texts, and the interpretability metrics.

Deterministic throughout; formulas in docs/methods.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import pandas as pd
from scipy.special import entr

from cliplens.io import read_embeddings
from cliplens.metrics import unit_rows

if TYPE_CHECKING:
    import torch

    from cliplens.models import LoadedModel

# Labelling heads reads stored embeddings only: the model side (encoding the property descriptions)
# imports torch and open_clip inside its two functions, so that the job that labels heads does not.
ArrayLike: TypeAlias = "np.ndarray | torch.Tensor"


def _numpy(array: ArrayLike) -> np.ndarray:
    torch = sys.modules.get("torch")  # a tensor implies torch is imported
    if torch is not None and isinstance(array, torch.Tensor):
        return array.detach().cpu().float().numpy()
    return np.asarray(array, dtype=np.float32)


@dataclass
class PropertyEmbeddings:
    """Embedded property descriptions: ``embeddings [Q, D]`` (normalised), ``owner [Q]`` indexes ``names``."""

    names: list[str]
    embeddings: np.ndarray
    owner: np.ndarray


def encode_properties(loaded: LoadedModel, properties: dict[str, list[str]]) -> PropertyEmbeddings:
    """Embed every description of every property (see :func:`cliplens.textpools.load_properties`)."""
    from cliplens.text import encode_prompts

    names = list(properties)
    descriptions = [text for name in names for text in properties[name]]
    owner = np.repeat(np.arange(len(names)), [len(properties[name]) for name in names])
    return PropertyEmbeddings(names, _numpy(encode_prompts(loaded, descriptions)), owner)


def text_property_similarity(texts: ArrayLike, properties: PropertyEmbeddings) -> np.ndarray:
    """s(t, p) = max over the descriptions d of p of cos(t, d): [M, P]."""
    similarity = unit_rows(_numpy(texts)) @ unit_rows(properties.embeddings).T  # [M, Q]
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

    ``spans`` is the output of :func:`cliplens.interpret.textspan.textspan_heads` (``text_index`` into
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
        (name, float(value), *np.percentile(boot[name], [tail, 100 - tail]), num_heads, n_boot) for name, value in point.items()
    ]
    return pd.DataFrame(rows, columns=["metric", "value", "ci_low", "ci_high", "n_heads", "n_boot"])


def write_property_embeddings(loaded: LoadedModel, properties: Mapping[str, list[str]], path: str | os.PathLike) -> None:
    """Embed every description of every property (rows grouped by property, in file order)."""
    from cliplens.text import PROPERTY_FIELDS, _write_texts

    encoded = encode_properties(loaded, dict(properties))
    columns = {
        "property": [encoded.names[i] for i in encoded.owner],
        "text": [t for name in encoded.names for t in properties[name]],
    }
    _write_texts(path, PROPERTY_FIELDS, columns, encoded.embeddings, loaded.provenance)


def read_property_embeddings(path: str | os.PathLike) -> PropertyEmbeddings:
    """The embedded property descriptions of :func:`write_property_embeddings`."""
    rows, embeddings = read_embeddings(path)
    names = list(dict.fromkeys(rows["property"]))
    owner = rows["property"].map({name: i for i, name in enumerate(names)}).to_numpy()
    return PropertyEmbeddings(names, embeddings, owner)


def head_labels_from_frame(frame: pd.DataFrame) -> HeadLabels:
    """Rebuild :class:`~cliplens.interpret.labels.HeadLabels` from its ``to_frame()`` table."""
    shares = [column for column in frame.columns if column.startswith("share_")]
    return HeadLabels(
        frame[["layer", "head"]].to_numpy(), [c.removeprefix("share_") for c in shares], frame[shares].to_numpy(np.float64)
    )
