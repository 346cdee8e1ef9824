"""Mean-ablation: zero-shot accuracy when terms of the decomposition are replaced by their dataset mean."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
import torch

from cliplens.interpret.contributions import (
    ARRAY_FIELDS,
    Contributions,
    ContributionStore,
    select_rows,
    store_labels,
)


class Term(NamedTuple):
    """A set of terms to mean-ablate: ('embed',), ('mlp', l), ('attn', l) or ('head', l, h)."""

    kind: Literal["embed", "mlp", "attn", "head"]
    layer: int | None = None
    head: int | None = None


def _term_values(chunk: Contributions, term: Term) -> np.ndarray:
    """The [M, D] values of one term in a chunk, as float32."""
    if term.kind == "embed":
        values = chunk.embed
    elif term.kind == "mlp":
        values = chunk.mlps[:, term.layer]
    elif term.kind == "attn":
        values = chunk.attns[:, term.layer]
    elif term.kind == "head":
        assert term.layer is not None and term.head is not None  # ('head', l, h)
        values = chunk.heads[:, chunk.head_index(term.layer), term.head]
    else:
        raise ValueError(f"term kind {term.kind!r} unknown; valid: embed, mlp, attn, head")
    return np.asarray(values, dtype=np.float32)


def _dataset_means(source: Contributions | ContributionStore) -> Contributions:
    """Dataset means of every stored term, as a one-row :class:`Contributions` (float64)."""
    sums: dict[str, np.ndarray] | None
    head_layers: tuple[int, ...]
    sums, count, head_layers = None, 0, ()
    for chunk in source.chunks():
        part = {name: np.asarray(getattr(chunk, name), dtype=np.float64).sum(0, keepdims=True) for name in ARRAY_FIELDS}
        sums = part if sums is None else {name: sums[name] + part[name] for name in ARRAY_FIELDS}
        count += len(chunk)
        head_layers = chunk.head_layers
    assert sums is not None, "no rows to average"
    return Contributions(ids=np.array(["mean"], dtype=object), head_layers=head_layers, **{k: v / count for k, v in sums.items()})


def _distinct_terms(ablate: Sequence[Term], num_layers: int) -> list[Term]:
    """Terms with absolute layer indices, each once; a head may not be ablated with its layer."""
    terms = list(
        dict.fromkeys(
            Term(t.kind, None if t.layer is None else t.layer % num_layers, t.head) for t in (Term(*term) for term in ablate)
        )
    )
    attn_layers = {t.layer for t in terms if t.kind == "attn"}
    if any(t.kind == "head" and t.layer in attn_layers for t in terms):
        raise ValueError("a head and the whole attention of its layer cannot be ablated together")
    return terms


def _check_labels(source: Contributions | ContributionStore, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (len(source),):
        raise ValueError(f"labels must have shape ({len(source)},) in store order; got {labels.shape}")
    return labels


def mean_ablation_accuracy(
    source: Contributions | ContributionStore,
    labels: np.ndarray,
    class_embeddings: np.ndarray | torch.Tensor,
    ablate: Sequence[Term] = (),
) -> float:
    """Zero-shot top-1 accuracy when the terms ``ablate`` are replaced by their dataset mean.

    ``labels [M]`` are class indices in store order, ``class_embeddings [C, D]`` the normalised
    class text embeddings. The prediction is ``argmax_c (sum of terms) . t_c`` (the image norm
    does not change the argmax). With ``ablate=()`` this is the un-ablated accuracy.
    """
    labels = _check_labels(source, labels)
    text = np.asarray(class_embeddings, dtype=np.float32)
    means = _dataset_means(source) if ablate else None
    ablate = _distinct_terms(ablate, means.num_layers) if means is not None else []
    correct, offset = 0, 0
    for chunk in source.chunks():
        image = chunk.total()
        for term in ablate:
            assert means is not None  # ablate is empty without means
            image += _term_values(means, term) - _term_values(chunk, term)
        predictions = (image @ text.T).argmax(1)
        correct += int((predictions == labels[offset : offset + len(chunk)]).sum())
        offset += len(chunk)
    return correct / len(labels)


def mean_ablation_tables(
    source: Contributions | ContributionStore,
    labels: np.ndarray,
    class_embeddings: np.ndarray | torch.Tensor,
    block_rows: int = 256,
) -> pd.DataFrame:
    """Accuracy under mean-ablation of every single term and of cumulative layer sets.

    Columns: ``ablation`` (none | embed | attn | mlp | head | attn_upto | mlp_upto | all_upto),
    ``layer``, ``head`` (-1 where not applicable), ``accuracy``. ``*_upto`` rows at layer l ablate
    layers 0..l (attention, MLP, or both). ``head`` rows cover the stored head layers. One pass
    over the store for the means and one for the accuracies, all ablations at once per block
    of ``block_rows`` images (memory: block_rows x ablations x classes floats).
    """
    labels = _check_labels(source, labels)
    text = np.asarray(class_embeddings, dtype=np.float32)
    means = _dataset_means(source)
    num_layers = means.num_layers
    rows: list[tuple[str, int, int]] = [("none", -1, -1), ("embed", -1, -1)]
    rows += [(kind, layer, -1) for kind in ("attn", "mlp", "attn_upto", "mlp_upto", "all_upto") for layer in range(num_layers)]
    rows += [("head", layer, head) for layer in means.head_layers for head in range(means.num_heads)]
    correct = np.zeros(len(rows), dtype=np.int64)
    mean_logits = {
        name: np.asarray(getattr(means, name), dtype=np.float32) @ text.T for name in ("embed", "mlps", "attns", "heads")
    }
    offset = 0
    for chunk in (block for part in source.chunks() for block in part.chunks(block_rows)):
        truth = labels[offset : offset + len(chunk)]
        offset += len(chunk)
        base = chunk.total() @ text.T  # [M, C]
        # logit change when a term is replaced by its mean: (mean - value) . t_c
        embed_delta = mean_logits["embed"] - np.asarray(chunk.embed, np.float32) @ text.T  # [M, C]
        attn_delta = mean_logits["attns"] - np.asarray(chunk.attns, np.float32) @ text.T  # [M, L, C]
        mlp_delta = mean_logits["mlps"] - np.asarray(chunk.mlps, np.float32) @ text.T
        head_delta = mean_logits["heads"] - np.asarray(chunk.heads, np.float32) @ text.T  # [M, n, H, C]
        variants = [
            base[:, None],
            (base + embed_delta)[:, None],
            base[:, None] + attn_delta,
            base[:, None] + mlp_delta,
            base[:, None] + np.cumsum(attn_delta, axis=1),
            base[:, None] + np.cumsum(mlp_delta, axis=1),
            base[:, None] + np.cumsum(attn_delta + mlp_delta, axis=1),
            base[:, None] + head_delta.reshape(len(chunk), -1, text.shape[0]),
        ]
        logits = np.concatenate(variants, axis=1)  # [M, rows, C]
        correct += (logits.argmax(-1) == truth[:, None]).sum(0)
    table = pd.DataFrame(rows, columns=["ablation", "layer", "head"])
    table["accuracy"] = correct / len(labels)
    return table


NO_LABELS = "unavailable: no image has a class label"


def ablation_table(store: ContributionStore, manifest: pd.DataFrame, class_embeddings: np.ndarray) -> pd.DataFrame:
    """Mean-ablation accuracies (:func:`cliplens.interpret.ablation.mean_ablation_tables`) over the labelled stored images.

    A first row ``zero_shot`` holds the accuracy of the stored image embeddings themselves, which
    the row ``none`` (sum of the stored terms) reproduces up to storage rounding. Columns:
    ablation, layer, head, accuracy, n_images. Without any labelled image: one row saying so.
    """
    labels = store_labels(store, manifest)
    keep = labels >= 0
    if not keep.any():
        return pd.DataFrame([{"ablation": NO_LABELS, "layer": -1, "head": -1, "accuracy": np.nan, "n_images": 0}])
    source = store if keep.all() else select_rows(store.load(), keep)
    labels = labels[keep]
    embedding = np.concatenate([np.asarray(chunk.embedding, np.float32) for chunk in source.chunks()])
    zero_shot = float(((embedding @ np.asarray(class_embeddings, np.float32).T).argmax(1) == labels).mean())
    table = pd.concat(
        [
            pd.DataFrame([{"ablation": "zero_shot", "layer": -1, "head": -1, "accuracy": zero_shot}]),
            mean_ablation_tables(source, labels, class_embeddings),
        ],
        ignore_index=True,
    )
    return table.assign(n_images=len(labels))
