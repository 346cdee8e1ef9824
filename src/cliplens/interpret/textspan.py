"""TEXTSPAN (Gandelsman et al., ICLR 2024): describe a head's output space with a few texts.

docs/methods.md. Given a head's contributions C [K, D] over K images and a pool of
text embeddings T [M, D]: project T onto the top-r right singular vectors of C, centre C, then m
times pick the text that scores highest, record it with the share of the variance of C it explains,
and remove its direction from C and from every text in T. The score (``criterion``) is the
authors' (``"reference"``: the spread of C t_j with the residual t_j as it is) or the variance
along the unit direction of t_j (``"normalised"``).

"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch

from cliplens.interpret.contributions import Contributions, ContributionStore

Criterion = Literal["reference", "normalised"]


def textspan(
    contributions: np.ndarray | torch.Tensor,
    texts: np.ndarray | torch.Tensor,
    m: int = 10,
    r: int = 80,
    criterion: Criterion = "reference",
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy text basis of one head: (indices [m] into ``texts``, variance explained [m]).

    ``criterion`` ranks the remaining texts t_j by ``|C t_j|^2`` (``"reference"``, the authors'
    released code: the standard deviation of C t_j, t_j not re-normalised after earlier removals)
    or by ``|C t_j|^2 / |t_j|^2`` (``"normalised"``: the variance along the unit direction).
    ``variance_explained[i]`` is the variance of the (residual) centred contributions along the
    unit direction of the i-th chosen (residual) text, as a fraction of the total variance of the
    centred C, whatever the criterion; the chosen directions are mutually orthogonal, so the
    fractions sum to <= 1. Texts whose residual direction has vanished (norm <= 1e-8 of the
    largest initial one) are never chosen; fewer than m indices come back when none is left.
    Deterministic: float64, ties broken towards the lower index.
    """
    if criterion not in get_args(Criterion):
        raise ValueError(f"criterion {criterion!r} unknown; valid: {list(get_args(Criterion))}")
    data = np.asarray(contributions, dtype=np.float64)
    _, _, right = np.linalg.svd(data, full_matrices=False)
    basis = right[:r]  # orthonormal rows [r, D]
    centred = data - data.mean(axis=0, keepdims=True)
    total_variance = float((centred**2).sum())
    # texts projected on the span live in r coordinates; |C u|^2 for any direction u in the span
    # is u' G u with G the Gram matrix of the centred data's span coordinates
    pool = np.asarray(texts, dtype=np.float64) @ basis.T  # [M, r]
    coordinates = centred @ basis.T
    gram = coordinates.T @ coordinates  # [r, r]
    tolerance = 1e-8 * max(float(np.linalg.norm(pool, axis=1).max(initial=0.0)), 1e-300)
    chosen, explained = [], []
    for _ in range(min(m, len(pool))):
        norms = np.linalg.norm(pool, axis=1)
        alive = norms > tolerance
        if not alive.any() or total_variance == 0.0:
            break
        spread = ((pool @ gram) * pool).sum(axis=1)  # |C t_j|^2
        along_unit = spread / np.where(alive, norms, 1.0) ** 2
        score = along_unit if criterion == "normalised" else spread
        best = int(np.argmax(np.where(alive, score, -np.inf)))
        direction = pool[best] / norms[best]
        chosen.append(best)
        explained.append(along_unit[best] / total_variance)
        remover = np.eye(len(direction)) - np.outer(direction, direction)
        gram = remover @ gram @ remover
        pool = pool @ remover
    return np.asarray(chosen, dtype=np.int64), np.asarray(explained, dtype=np.float64)


def textspan_heads(
    source: Contributions | ContributionStore,
    text_embeddings: np.ndarray | torch.Tensor,
    texts: Sequence[str],
    m: int = 10,
    r: int = 80,
    layers: Sequence[int] | None = None,
    criterion: Criterion = "reference",
) -> pd.DataFrame:
    """TEXTSPAN (:func:`textspan` with ``criterion``) for every stored head (or those of ``layers``).

    Returns one row per (layer, head, rank): columns ``layer``, ``head``, ``rank``, ``text_index``,
    ``text``, ``variance_explained``.
    """
    if len(texts) != len(text_embeddings):
        raise ValueError(f"{len(texts)} texts but {len(text_embeddings)} text embeddings")
    selected = source.head_layers if layers is None else [layer % source.num_layers for layer in layers]
    frames = []
    for layer in selected:
        for head in range(source.num_heads):
            indices, explained = textspan(source.head_matrix(layer, head), text_embeddings, m=m, r=r, criterion=criterion)
            frames.append(
                pd.DataFrame(
                    {
                        "layer": layer,
                        "head": head,
                        "rank": np.arange(len(indices)),
                        "text_index": indices,
                        "text": [texts[i] for i in indices],
                        "variance_explained": explained,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)
