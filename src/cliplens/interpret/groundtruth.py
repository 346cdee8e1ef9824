"""Head-level ground truth on the planted-concept world (:mod:`cliplens.planted`).

The world's concepts (colour, shape, size, position, background texture) are known, so the
head analyses can be checked against them: TEXTSPAN (:func:`~cliplens.interpret.textspan.textspan_heads`)
over a text pool in the words of the captions gives each head an attribute; mean-ablating the
heads of one attribute (:func:`~cliplens.interpret.ablation.mean_ablation_accuracy`) should hurt
that attribute's zero-shot accuracy more than the other's; mean-ablating the background heads
should help the worst shape x background group of ``test_shifted``, where the background cue of
``train`` is reversed (TEXTSPAN's Waterbirds experiment). Whether an expectation holds is a
finding, reported either way (:func:`head_expectations`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torchvision.transforms.v2 import functional as TF

from cliplens.interpret.ablation import Term, mean_ablation_accuracy
from cliplens.interpret.contributions import Contributions
from cliplens.interpret.decompose import decompose
from cliplens.interpret.labels import HeadLabels
from cliplens.interpret.textspan import Criterion, textspan_heads
from cliplens.models import LoadedModel
from cliplens.plotting import save_figure
from cliplens.text import encode_labels
from cliplens.training import attribute_templates

ArrayLike = np.ndarray | torch.Tensor

CATEGORIES = ("colour", "shape", "background", "position", "size", "other")
"""Categories of the planted text pool; ``other`` holds the distractors."""

PHRASINGS: dict[str, tuple[str, ...]] = {
    "colour": ("{}", "a {} shape"),
    "shape": ("{}", "a {}"),
    "background": ("{}", "on {}", "a shape on {}"),
    "position": ("{}", "at the {}", "a shape at the {}"),
    "size": ("{}", "a {} shape"),
}
"""Phrasings of one attribute value, in the words of the captions (each includes its zero-shot template)."""

ABLATED = ("colour", "shape", "background")
"""Attributes whose heads are mean-ablated together in :func:`ablation_effects`."""
TARGETS = ("colour", "shape")
"""Attributes whose zero-shot accuracy :func:`ablation_effects` measures."""

HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "not testable"


def planted_text_pool(vocabularies: Mapping[str, Sequence[str]], distractors: Sequence[str]) -> pd.DataFrame:
    """The planted text pool: columns ``text``, ``category``.

    Every value of every attribute in each of its :data:`PHRASINGS` (categories in
    :data:`CATEGORIES` order, values in vocabulary order), then the distractors (category
    ``other``) in the given order. A text appears once, with the category of its first occurrence.
    """
    unknown = sorted(set(vocabularies) - set(PHRASINGS))
    if unknown:
        raise ValueError(f"vocabularies: {unknown} unknown; valid attributes: {sorted(PHRASINGS)}")
    rows = [
        (phrasing.format(value), category)
        for category in CATEGORIES
        if category in vocabularies
        for value in vocabularies[category]
        for phrasing in PHRASINGS[category]
    ]
    rows += [(text, "other") for text in distractors]
    return pd.DataFrame(rows, columns=["text", "category"]).drop_duplicates("text", ignore_index=True)


def attribute_text_embeddings(loaded: LoadedModel, vocabularies: Mapping[str, Sequence[str]], attribute: str) -> np.ndarray:
    """Zero-shot class embeddings [V, D] of ``vocabularies[attribute]``, ensembled over :func:`attribute_templates`."""
    return encode_labels(loaded, vocabularies[attribute], attribute_templates(vocabularies, attribute)).numpy()


def decompose_all(
    loaded: LoadedModel, images_uint8: np.ndarray, batch_size: int = 256, ids: Sequence[str] | None = None
) -> Contributions:
    """Every layer's head contributions (float32) of uint8 images [N, S, S, 3] at the model's input size.

    Pixels are normalised like the model's preprocessing (/255, then its mean and std) and
    decomposed batch by batch (:func:`~cliplens.interpret.decompose.decompose`). ``ids`` default
    to the row numbers.
    """
    size = loaded.image_size
    if images_uint8.ndim != 4 or images_uint8.shape[1:] != (size, size, 3):
        raise ValueError(f"images must be uint8 [N, {size}, {size}, 3] (the model's input size); got {images_uint8.shape}")
    names = [str(i) for i in range(len(images_uint8))] if ids is None else list(ids)
    parts = []
    for start in range(0, len(images_uint8), batch_size):
        batch = torch.as_tensor(images_uint8[start : start + batch_size]).to(loaded.device)
        pixels = TF.normalize(batch.permute(0, 3, 1, 2).float() / 255.0, loaded.mean, loaded.std)
        parts.append(Contributions.from_decomposition(names[start : start + batch_size], decompose(loaded, pixels), None))
    if not parts:
        raise ValueError("no images to decompose")
    return Contributions.concatenate(parts)


def head_attributes(
    contributions: Contributions,
    pool_embeddings: ArrayLike,
    pool: pd.DataFrame,
    top_m: int,
    rank: int,
    criterion: Criterion = "reference",
) -> pd.DataFrame:
    """Each head's attribute from its TEXTSPAN texts over the planted pool (every stored head).

    TEXTSPAN (:func:`~cliplens.interpret.textspan.textspan_heads`) picks ``top_m`` texts per head
    within the top-``rank`` span of its contributions, ranking texts by ``criterion``.

    ``pool`` is :func:`planted_text_pool`'s table (``text``, ``category``), ``pool_embeddings
    [T, D]`` its normalised embeddings in the same order. A head's share of a category is the
    variance explained by its chosen texts of that category over that of all its chosen texts;
    its attribute is the category with the largest share (ties: first in :data:`CATEGORIES`
    order; ``none`` when no text explains any variance). Columns: layer, head, attribute,
    consistency (the largest share), share_<category> for each category of the pool, explained
    (total variance explained), texts (chosen texts joined with " | ").
    """
    spans = textspan_heads(contributions, pool_embeddings, pool["text"].tolist(), m=top_m, r=rank, criterion=criterion)
    spans["category"] = pool["category"].to_numpy()[spans["text_index"].to_numpy()]
    categories = [c for c in CATEGORIES if c in set(pool["category"])] + sorted(set(pool["category"]) - set(CATEGORIES))
    heads = pd.MultiIndex.from_product([contributions.head_layers, range(contributions.num_heads)], names=["layer", "head"])
    by_category = spans.pivot_table(
        index=["layer", "head"], columns="category", values="variance_explained", aggfunc="sum", fill_value=0.0
    )
    mass = by_category.reindex(index=heads, columns=categories, fill_value=0.0).to_numpy(np.float64)
    explained = mass.sum(axis=1)
    distribution = np.divide(mass, explained[:, None], out=np.zeros_like(mass), where=explained[:, None] > 0)
    frame = HeadLabels(np.asarray(heads.to_list()), categories, distribution).to_frame().rename(columns={"label": "attribute"})
    frame.loc[explained == 0, "attribute"] = "none"
    texts = spans.groupby(["layer", "head"])["text"].agg(" | ".join).reindex(heads, fill_value="")
    return frame.assign(explained=explained, texts=texts.to_numpy())


def labelled_heads(heads: pd.DataFrame, attribute: str) -> list[tuple[int, int]]:
    """(layer, head) of the heads whose attribute is ``attribute`` in :func:`head_attributes`' table."""
    rows = heads[heads["attribute"] == attribute]
    return list(zip(rows["layer"].astype(int).tolist(), rows["head"].astype(int).tolist()))


def class_indices(values: pd.Series, vocabulary: Sequence[str]) -> np.ndarray:
    """Index of each value in ``vocabulary`` [M]; a value outside it is an error."""
    position = {value: i for i, value in enumerate(vocabulary)}
    unknown = sorted(set(values) - set(position))
    if unknown:
        raise ValueError(f"values {unknown} are not in the vocabulary {list(vocabulary)}")
    return values.map(position).to_numpy(np.int64)


def _head_terms(heads: Sequence[tuple[int, int]]) -> list[Term]:
    return [Term("head", layer, head) for layer, head in heads]


def _check_rows(contributions: Contributions, records: pd.DataFrame) -> None:
    if len(contributions) != len(records):
        raise ValueError(f"{len(contributions)} decomposed images but {len(records)} records (same rows, same order)")


def ablation_effects(
    contributions: Contributions,
    records: pd.DataFrame,
    attribute_texts: Mapping[str, ArrayLike],
    vocabularies: Mapping[str, Sequence[str]],
    heads: pd.DataFrame,
) -> pd.DataFrame:
    """Zero-shot accuracy on colour and on shape, plain and with the heads of one attribute mean-ablated.

    ``attribute_texts[a]`` are the normalised class embeddings [V, D] of ``vocabularies[a]`` (same
    order) for a in :data:`TARGETS`; labels are the indices of ``records[a]`` in the vocabulary.
    For X in :data:`ABLATED`, all heads that ``heads`` (:func:`head_attributes`) labels X are
    replaced together by their means over ``contributions``. Columns: ablated_attribute (none |
    colour | shape | background), heads (how many), target (colour | shape), accuracy, drop
    (plain accuracy minus accuracy). An attribute no head carries gets rows with 0 heads and
    NaN accuracy and drop.
    """
    _check_rows(contributions, records)
    labels = {target: class_indices(records[target], vocabularies[target]) for target in TARGETS}
    texts = {target: np.asarray(attribute_texts[target], dtype=np.float32) for target in TARGETS}
    plain = {target: mean_ablation_accuracy(contributions, labels[target], texts[target]) for target in TARGETS}
    rows = [("none", 0, target, plain[target], 0.0) for target in TARGETS]
    for attribute in ABLATED:
        ablate = _head_terms(labelled_heads(heads, attribute))
        for target in TARGETS:
            accuracy = mean_ablation_accuracy(contributions, labels[target], texts[target], ablate) if ablate else np.nan
            rows.append((attribute, len(ablate), target, accuracy, plain[target] - accuracy))
    return pd.DataFrame(rows, columns=["ablated_attribute", "heads", "target", "accuracy", "drop"])


def spurious_cue(
    contributions: Contributions,
    records: pd.DataFrame,
    shape_texts: ArrayLike,
    background_heads: Sequence[tuple[int, int]],
    shapes: Sequence[str],
    backgrounds: Sequence[str],
) -> pd.DataFrame:
    """Shape zero-shot accuracy per shape x background group, before and after mean-ablating ``background_heads``.

    Meant for ``test_shifted``. The ablation means are taken over all of ``contributions`` (the
    same images), never over one group: a group's accuracy is the whole set's accuracy with every
    other image left unlabelled, rescaled to the group. Columns: row (group | mean | worst_group),
    shape, background, images, accuracy_before, accuracy_after, change (after minus before),
    background_heads. ``group`` rows cover every shape x background pair (an empty group: 0 images,
    NaN accuracies); ``mean`` is over all images, ``worst_group`` the smallest accuracy of a
    non-empty group: ``accuracy_after`` is the smallest after the ablation, whichever group it is;
    shape, background and images name the worst group before it. Without background heads the
    ``after`` columns are NaN.
    """
    _check_rows(contributions, records)
    labels = class_indices(records["shape"], shapes)
    class_indices(records["background"], backgrounds)  # validates the backgrounds
    text = np.asarray(shape_texts, dtype=np.float32)
    ablate = _head_terms(background_heads)

    def accuracies(keep: np.ndarray) -> tuple[float, float]:
        if not keep.any():
            return np.nan, np.nan
        masked = np.where(keep, labels, -1)  # -1 matches no class: only ``keep`` can count as correct
        scale = len(labels) / int(keep.sum())
        before = mean_ablation_accuracy(contributions, masked, text) * scale
        after = mean_ablation_accuracy(contributions, masked, text, ablate) * scale if ablate else np.nan
        return before, after

    rows = []
    for shape in shapes:
        for background in backgrounds:
            keep = ((records["shape"] == shape) & (records["background"] == background)).to_numpy()
            rows.append(("group", shape, background, int(keep.sum()), *accuracies(keep)))
    table = pd.DataFrame(rows, columns=["row", "shape", "background", "images", "accuracy_before", "accuracy_after"])
    groups = table[table["images"] > 0]
    worst, after = groups.loc[groups["accuracy_before"].idxmin()], groups["accuracy_after"].min()
    summary = pd.DataFrame(
        [
            ("mean", "", "", len(labels), *accuracies(np.ones(len(labels), dtype=bool))),
            ("worst_group", worst["shape"], worst["background"], worst["images"], worst["accuracy_before"], after),
        ],
        columns=table.columns,
    )
    table = pd.concat([table, summary], ignore_index=True)
    return table.assign(change=table["accuracy_after"] - table["accuracy_before"], background_heads=len(ablate))


def _ablation_row(ablation: pd.DataFrame, attribute: str, target: str) -> pd.Series:
    rows = ablation[(ablation["ablated_attribute"] == attribute) & (ablation["target"] == target)]
    if len(rows) != 1:
        raise ValueError(f"ablation table needs one row for ablated_attribute={attribute!r}, target={target!r}")
    return rows.iloc[0]


def _heads_expectation(ablation: pd.DataFrame, attribute: str, other: str) -> tuple[str, str, str]:
    """(expectation, measured, verdict): ablating ``attribute`` heads lowers its accuracy more than ``other``'s."""
    expectation = f"ablating the {attribute} heads lowers {attribute} accuracy more than {other} accuracy"
    own, cross = _ablation_row(ablation, attribute, attribute), _ablation_row(ablation, attribute, other)
    count = int(own["heads"])
    if count == 0 or np.isnan(own["drop"]) or np.isnan(cross["drop"]):
        return expectation, f"no head labelled {attribute}", UNTESTABLE
    plain_own, plain_cross = (_ablation_row(ablation, "none", t)["accuracy"] for t in (attribute, other))
    measured = (
        f"{count} {attribute} heads: {attribute} accuracy {plain_own:.3f} -> {own['accuracy']:.3f} "
        f"(drop {own['drop']:.3f}); {other} accuracy {plain_cross:.3f} -> {cross['accuracy']:.3f} (drop {cross['drop']:.3f})"
    )
    holds = own["drop"] > 0 and own["drop"] > cross["drop"]
    return expectation, measured, HOLDS if holds else FAILS


def head_expectations(ablation: pd.DataFrame, spurious: pd.DataFrame) -> pd.DataFrame:
    """Verdicts (holds | does not hold | not testable) of the three head-level expectations.

    (i) ablating the colour heads lowers colour accuracy more than shape accuracy (and lowers it);
    (ii) the same for shape heads; (iii) ablating the background heads raises the worst-group shape
    accuracy on ``test_shifted``. Inputs: :func:`ablation_effects` and :func:`spurious_cue`.
    Columns: line (``heads``, as in the other lines' expectation tables), expectation, measured, verdict.
    """
    rows = [_heads_expectation(ablation, "colour", "shape"), _heads_expectation(ablation, "shape", "colour")]
    expectation = "ablating the background heads raises worst-group shape accuracy on test_shifted"
    worst, mean = (spurious[spurious["row"] == name].iloc[0] for name in ("worst_group", "mean"))
    count = int(worst["background_heads"])
    if count == 0 or np.isnan(worst["accuracy_before"]) or np.isnan(worst["accuracy_after"]):
        rows.append((expectation, f"{count} background heads", UNTESTABLE))
    else:
        measured = (
            f"{count} background heads: worst-group accuracy {worst['accuracy_before']:.3f} -> {worst['accuracy_after']:.3f}; "
            f"mean accuracy {mean['accuracy_before']:.3f} -> {mean['accuracy_after']:.3f}"
        )
        rows.append((expectation, measured, HOLDS if worst["accuracy_after"] > worst["accuracy_before"] else FAILS))
    return pd.DataFrame(rows, columns=["expectation", "measured", "verdict"]).assign(line="heads")[
        ["line", "expectation", "measured", "verdict"]
    ]


def plot_head_groundtruth(
    heads: pd.DataFrame, ablation: pd.DataFrame, path: str | os.PathLike, random_weights: bool = False
) -> list[Path]:
    """Heads x category shares (each head's attribute marked) beside the accuracy drops of each ablation."""
    shares = [c for c in heads.columns if c.startswith("share_")]
    distribution = heads[shares].to_numpy(np.float64)
    fig, (heatmap, bars) = plt.subplots(
        1, 2, figsize=(11, max(3.5, 0.28 * len(heads) + 1.5)), gridspec_kw={"width_ratios": [1, 1.2]}
    )
    image = heatmap.imshow(distribution, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    labelled = heads["attribute"] != "none"
    heatmap.scatter(distribution.argmax(axis=1)[labelled], np.flatnonzero(labelled), marker="x", color="red", s=14)
    heatmap.set_xticks(range(len(shares)), [s.removeprefix("share_") for s in shares], rotation=45, ha="right")
    heatmap.set_yticks(range(len(heads)), [f"L{l}.H{h}" for l, h in zip(heads["layer"], heads["head"])], fontsize=7)
    heatmap.set_title("TEXTSPAN texts per category (x: attribute)", fontsize=9)
    fig.colorbar(image, ax=heatmap, label="share of variance explained")
    width = 0.8 / len(TARGETS)
    for offset, target in enumerate(TARGETS):
        rows = ablation[(ablation["target"] == target) & (ablation["ablated_attribute"] != "none")].set_index("ablated_attribute")
        drops = rows.reindex(list(ABLATED))["drop"].to_numpy(np.float64)
        bars.bar(np.arange(len(ABLATED)) + (offset - (len(TARGETS) - 1) / 2) * width, np.nan_to_num(drops), width, label=target)
    counts = ablation.drop_duplicates("ablated_attribute").set_index("ablated_attribute")["heads"].reindex(list(ABLATED))
    bars.set_xticks(range(len(ABLATED)), [f"{name} heads\n(n={int(n)})" for name, n in counts.items()])
    for position, count in enumerate(counts):
        if count == 0:
            bars.text(position, 0, "no heads", ha="center", va="bottom", fontsize=8, color="grey")
    bars.axhline(0, color="grey", linewidth=0.8)
    bars.set_ylabel("accuracy drop under mean-ablation")
    bars.legend(title="zero-shot accuracy of", fontsize=8, title_fontsize=8)
    bars.set_title("heads of one attribute mean-ablated together", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, random_weights=random_weights)
