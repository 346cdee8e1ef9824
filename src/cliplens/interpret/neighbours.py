"""Nearest-neighbour searches: property-based and per-head image and text neighbours (CLIP-InterpreT)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from cliplens.interpret.contributions import ContributionStore
from cliplens.interpret.labels import ArrayLike, HeadLabels, _numpy
from cliplens.metrics import unit_rows
from cliplens.planning import DEFAULT_QUERY_IMAGES


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k highest scores per row (ties: lower index first)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def nearest_neighbours(
    queries: ArrayLike, database: ArrayLike, k: int = 5, exclude: Sequence[int] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine nearest neighbours: (indices [Q, k], similarities [Q, k]) of queries [Q, D] in [N, D].

    ``exclude[q]`` (a database index, e.g. the query itself) is never returned for query q.
    """
    scores = unit_rows(_numpy(queries)) @ unit_rows(_numpy(database)).T
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
    head_matrix: ArrayLike, query_indices: Sequence[int] | np.ndarray, k: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Per-head image neighbours: database [N, D] of one head's terms, ranked by cosine to the query's."""
    matrix = _numpy(head_matrix)
    return nearest_neighbours(matrix[np.asarray(query_indices)], matrix, k, exclude=query_indices)


def head_text_neighbours(head_matrix: ArrayLike, texts: ArrayLike, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per-head images of texts [T, D]: database [N, D] ranked by the dot product t . c_lh."""
    return _top_k(_numpy(texts) @ _numpy(head_matrix).T, k)


log = logging.getLogger(__name__)


def analysed_layers(store: ContributionStore, layers: int) -> list[int]:
    """The last ``layers`` layers whose heads the store holds (absolute indices)."""
    return list(store.head_layers[-layers:])


def query_heads(requested: Sequence[Sequence[int]], store: ContributionStore) -> list[tuple[int, int]]:
    """(layer, head) pairs of the per-head searches: the requested ones (negative layers count
    from the end), or every head of the last layer."""
    if not requested:
        return [(store.num_layers - 1, head) for head in range(store.num_heads)]
    heads = [(layer % store.num_layers, head) for layer, head in requested]
    missing = [pair for pair in heads if pair[0] not in store.head_layers or not 0 <= pair[1] < store.num_heads]
    if missing:
        raise ValueError(
            f"interpret.queries.heads: {missing} not stored; layers {store.head_layers}, heads 0..{store.num_heads - 1}"
        )
    return heads


def query_images(store: ContributionStore, requested: Sequence[str]) -> np.ndarray:
    """Store rows of the query images: the requested ids, or the first DEFAULT_QUERY_IMAGES images."""
    ids = list(store.ids)
    if not requested:
        return np.arange(min(DEFAULT_QUERY_IMAGES, len(ids)))
    missing = [image for image in requested if image not in ids]
    if missing:
        raise ValueError(f"interpret.queries.images: {missing} are not among the {len(ids)} decomposed images, e.g. {ids[:5]}")
    return np.asarray([ids.index(image) for image in requested])


@dataclasses.dataclass
class NeighbourRows:
    """Rows of a neighbour figure: ``indices``/``scores [R, k]`` (store rows), a title per row and,
    for image queries, the query's store row ``queries [R]``."""

    titles: list[str]
    indices: np.ndarray
    scores: np.ndarray
    queries: np.ndarray | None = None

    @classmethod
    def concatenate(cls, parts: Sequence[NeighbourRows], k: int, image_queries: bool) -> NeighbourRows:
        """All rows of ``parts`` (possibly none) one after the other."""
        empty = np.empty((0, k), np.int64)
        return cls(
            titles=[title for part in parts for title in part.titles],
            indices=np.concatenate([empty, *(p.indices for p in parts)]),
            scores=np.concatenate([empty.astype(np.float32), *(p.scores for p in parts)]),
            queries=np.concatenate([np.empty(0, np.int64), *(p.queries for p in parts)]) if image_queries else None,
        )


def property_neighbour_rows(
    store: ContributionStore, labels: HeadLabels, queries: np.ndarray, properties: Sequence[str], k: int
) -> NeighbourRows:
    """Neighbours of the query images using only the heads labelled with each property
    (empty ``properties``: every property that labels a head); properties no head carries are skipped."""
    parts = []
    for prop in properties or list(dict.fromkeys(labels.labels)):
        mask = labels.head_mask(prop, store.head_layers, store.num_heads)
        if not mask.any():
            log.info("no head is labelled %r: no property neighbours for it", prop)
            continue
        representation = np.concatenate([property_representation(chunk.heads, mask) for chunk in store.chunks()])
        indices, scores = nearest_neighbours(representation[queries], representation, k, exclude=queries)
        parts.append(NeighbourRows([f"{prop} ({int(mask.sum())} heads)"] * len(queries), indices, scores, queries))
    return NeighbourRows.concatenate(parts, k, image_queries=True)


def head_image_neighbour_rows(
    store: ContributionStore, heads: Sequence[tuple[int, int]], queries: np.ndarray, k: int
) -> NeighbourRows:
    """Per-head image neighbours of the query images (cosine of one head's contributions)."""
    parts = []
    for layer, head in heads:
        indices, scores = head_image_neighbours(store.head_matrix(layer, head), queries, k)
        parts.append(NeighbourRows([f"L{layer}.H{head}"] * len(queries), indices, scores, queries))
    return NeighbourRows.concatenate(parts, k, image_queries=True)


def head_text_neighbour_rows(
    store: ContributionStore, heads: Sequence[tuple[int, int]], texts: Sequence[str], text_embeddings: np.ndarray, k: int
) -> NeighbourRows:
    """Per-head images of each text: the database ranked by t . c_lh."""
    parts = []
    for layer, head in heads:
        indices, scores = head_text_neighbours(store.head_matrix(layer, head), text_embeddings, k)
        parts.append(NeighbourRows([f"L{layer}.H{head}: {text}" for text in texts], indices, scores))
    return NeighbourRows.concatenate(parts, k, image_queries=False)
