"""Head-level ground truth on the planted world: invariants on a seeded random planted CLIP and a small world."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from cliplens.interpret.groundtruth import (
    CATEGORIES,
    FAILS,
    HOLDS,
    UNTESTABLE,
    ablation_effects,
    attribute_text_embeddings,
    decompose_all,
    head_attributes,
    head_expectations,
    labelled_heads,
    planted_text_pool,
    plot_head_groundtruth,
    spurious_cue,
)
from cliplens.interpret.textspan import textspan_heads
from cliplens.models import encode_pixels, load_model
from cliplens.planted import PlantedConfig, generate_split
from cliplens.text import encode_prompts
from cliplens.training import create_planted_clip

WORLD = PlantedConfig(counts={"train": 2, "test": 64, "test_shifted": 64})
VOCABULARIES = WORLD.vocabularies()
DISTRACTORS = ("a photo of a dog", "a bicycle", "a sandy beach", "red")  # "red" is a colour text already
MODEL_CFG = {"name": "planted_random", "source": "random", "arch": "cliplens-planted-vit", "seed": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def loaded():
    return load_model(MODEL_CFG)


@pytest.fixture(scope="module")
def splits():
    return {split: generate_split(WORLD, split) for split in ("test", "test_shifted")}


@pytest.fixture(scope="module")
def pool():
    return planted_text_pool(VOCABULARIES, DISTRACTORS)


@pytest.fixture(scope="module")
def decomposed(loaded, splits):
    return {
        split: decompose_all(loaded, images, batch_size=24, ids=records["image_id"])
        for split, (images, _, records) in splits.items()
    }


@pytest.fixture(scope="module")
def class_texts(loaded):
    return {a: attribute_text_embeddings(loaded, VOCABULARIES, a) for a in ("colour", "shape")}


@pytest.fixture(scope="module")
def heads(loaded, decomposed, pool):
    return head_attributes(decomposed["test"], encode_prompts(loaded, pool["text"].tolist()), pool, top_m=5, rank=32)


def direct_embeddings(loaded, images: np.ndarray) -> np.ndarray:
    """The model's own normalised image embeddings, without the decomposition."""
    return encode_pixels(loaded, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).numpy()


def mean_ablated(contributions, ablate: list[tuple[int, int]]) -> np.ndarray:
    """Sum of the terms with the listed heads replaced by their means over all rows (written out by hand)."""
    image = contributions.total().astype(np.float64)
    for layer, head in ablate:
        values = contributions.heads[:, contributions.head_index(layer), head].astype(np.float64)
        image += values.mean(axis=0) - values
    return image


def test_random_model_is_the_planted_architecture(loaded):
    model, _ = create_planted_clip(0)
    reference = model.state_dict()
    assert all(torch.equal(value, reference[name]) for name, value in loaded.model.state_dict().items())


def test_pool_names_every_value_in_its_category(pool):
    assert list(pool.columns) == ["text", "category"]
    assert not pool["text"].duplicated().any()
    assert set(pool["category"]) == set(CATEGORIES)
    for attribute, values in VOCABULARIES.items():
        texts = pool.loc[pool["category"] == attribute, "text"]
        for value in values:
            assert value in set(texts), (attribute, value)
            assert (texts.str.contains(value, regex=False)).sum() >= 2, (attribute, value)
    assert pool.loc[pool["category"] == "other", "text"].tolist() == list(DISTRACTORS[:-1])
    assert pool.loc[pool["text"] == "red", "category"].tolist() == ["colour"]
    assert {"a red shape", "a circle", "on stripes", "at the top left", "small"} <= set(pool["text"])
    pd.testing.assert_frame_equal(pool, planted_text_pool(VOCABULARIES, DISTRACTORS))
    with pytest.raises(ValueError, match="unknown"):
        planted_text_pool({"texture": ("stripes",)}, ())


def test_decompose_all_reproduces_the_model(loaded, splits, decomposed):
    images, _, records = splits["test"]
    contributions = decomposed["test"]
    assert contributions.heads.shape == (64, 4, 4, loaded.embed_dim)
    assert contributions.head_layers == (0, 1, 2, 3)
    assert contributions.ids.tolist() == records["image_id"].tolist()
    direct = direct_embeddings(loaded, images)
    np.testing.assert_allclose(contributions.embedding, direct, atol=1e-5)
    np.testing.assert_allclose(contributions.total(), direct, atol=1e-4)
    one_batch = decompose_all(loaded, images[:10], batch_size=64)
    np.testing.assert_allclose(one_batch.heads, contributions.heads[:10], atol=1e-5)
    with pytest.raises(ValueError, match="input size"):
        decompose_all(loaded, images[:, :16, :16])


def test_head_attributes_one_row_per_head(heads, pool):
    assert list(zip(heads["layer"], heads["head"])) == list(itertools.product(range(4), range(4)))
    shares = heads[[f"share_{c}" for c in CATEGORIES]].to_numpy()
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert (shares >= 0).all()
    assert heads["attribute"].tolist() == [CATEGORIES[i] for i in shares.argmax(axis=1)]
    assert ((heads["explained"] > 0) & (heads["explained"] <= 1 + 1e-9)).all()
    chosen = heads["texts"].str.split(" | ", regex=False)
    assert chosen.map(len).between(1, 5).all()
    assert set(itertools.chain.from_iterable(chosen)) <= set(pool["text"])


def test_head_shares_are_the_variance_its_texts_of_each_category_explain(loaded, decomposed, pool, heads):
    """share_c of a head = variance explained by its TEXTSPAN texts of category c / by all its texts."""
    spans = textspan_heads(decomposed["test"], encode_prompts(loaded, pool["text"].tolist()), pool["text"].tolist(), m=5, r=32)
    category = dict(zip(pool["text"], pool["category"]))
    for row in heads.itertuples():
        chosen = spans[(spans["layer"] == row.layer) & (spans["head"] == row.head)]
        assert row.texts.split(" | ") == chosen["text"].tolist()
        assert row.explained == pytest.approx(chosen["variance_explained"].sum())
        for name in CATEGORIES:
            own = chosen[chosen["text"].map(category) == name]["variance_explained"].sum()
            assert getattr(row, f"share_{name}") == pytest.approx(own / row.explained), (row.layer, row.head, name)
    assert heads["attribute"].nunique() > 1  # the shares differ between heads, so the check discriminates


def test_no_ablation_is_the_plain_zero_shot_accuracy(loaded, splits, decomposed, class_texts, heads):
    images, _, records = splits["test"]
    table = ablation_effects(decomposed["test"], records, class_texts, VOCABULARIES, heads)
    direct = direct_embeddings(loaded, images)
    for target in ("colour", "shape"):
        labels = records[target].map(VOCABULARIES[target].index).to_numpy()
        expected = ((direct @ class_texts[target].T).argmax(1) == labels).mean()
        none = table[(table["ablated_attribute"] == "none") & (table["target"] == target)]
        assert none["accuracy"].tolist() == [pytest.approx(expected)]
        rows = table[table["target"] == target].set_index("ablated_attribute")
        np.testing.assert_allclose(rows["drop"], expected - rows["accuracy"])
    counts = table.drop_duplicates("ablated_attribute").set_index("ablated_attribute")["heads"]
    for attribute in ("colour", "shape", "background"):
        assert counts[attribute] == len(labelled_heads(heads, attribute))


def test_ablation_mean_ablates_the_labelled_heads(splits, decomposed, class_texts, heads):
    _, _, records = splits["test"]
    contributions = decomposed["test"]
    layout = heads.assign(attribute=np.where(heads["layer"] == 3, "colour", np.where(heads["head"] == 0, "shape", "size")))
    table = ablation_effects(contributions, records, class_texts, VOCABULARIES, layout).set_index(["ablated_attribute", "target"])
    for attribute in ("colour", "shape"):
        ablated = mean_ablated(contributions, labelled_heads(layout, attribute))
        for target in ("colour", "shape"):
            labels = records[target].map(VOCABULARIES[target].index).to_numpy()
            expected = ((ablated @ class_texts[target].T).argmax(1) == labels).mean()
            assert table.loc[(attribute, target), "accuracy"] == pytest.approx(expected)
    assert table.loc[("colour", "colour"), "heads"] == 4 and table.loc[("shape", "shape"), "heads"] == 3
    assert table.loc["background", "heads"].eq(0).all() and table.loc["background", "accuracy"].isna().all()


def test_spurious_groups_cover_shape_by_background(loaded, splits, decomposed, class_texts):
    images, _, records = splits["test_shifted"]
    contributions = decomposed["test_shifted"]
    ablate = [(2, 1), (3, 0)]
    table = spurious_cue(contributions, records, class_texts["shape"], ablate, VOCABULARIES["shape"], VOCABULARIES["background"])
    groups = table[table["row"] == "group"]
    assert list(zip(groups["shape"], groups["background"])) == list(
        itertools.product(VOCABULARIES["shape"], VOCABULARIES["background"])
    )
    assert groups["images"].sum() == len(records)
    preferred = groups["background"] == groups["shape"].map(WORLD.preferred_background)
    assert groups.loc[preferred, "images"].eq(0).all() and groups.loc[preferred, "accuracy_before"].isna().all()

    truth = records["shape"].map(VOCABULARIES["shape"].index).to_numpy()
    before = (direct_embeddings(loaded, images) @ class_texts["shape"].T).argmax(1) == truth
    after = (mean_ablated(contributions, ablate) @ class_texts["shape"].T).argmax(1) == truth
    correct = records.assign(before=before, after=after).groupby(["shape", "background"])[["before", "after"]].mean()
    measured = groups[groups["images"] > 0].set_index(["shape", "background"])
    np.testing.assert_allclose(measured["accuracy_before"], correct.loc[measured.index, "before"])
    np.testing.assert_allclose(measured["accuracy_after"], correct.loc[measured.index, "after"])
    summary = table[table["row"] != "group"].set_index("row")
    assert summary.loc["mean", "accuracy_before"] == pytest.approx(before.mean())
    assert summary.loc["mean", "accuracy_after"] == pytest.approx(after.mean())
    assert summary.loc["worst_group", "accuracy_before"] == pytest.approx(measured["accuracy_before"].min())
    assert summary.loc["worst_group", "accuracy_after"] == pytest.approx(measured["accuracy_after"].min())
    np.testing.assert_allclose(table["change"], table["accuracy_after"] - table["accuracy_before"])
    assert (table["background_heads"] == 2).all()

    untouched = spurious_cue(contributions, records, class_texts["shape"], [], VOCABULARIES["shape"], VOCABULARIES["background"])
    assert untouched["accuracy_after"].isna().all()
    np.testing.assert_allclose(untouched["accuracy_before"], table["accuracy_before"])


def test_expectations_have_a_verdict_per_row(splits, decomposed, class_texts, heads, tmp_path):
    _, _, records = splits["test"]
    _, _, shifted = splits["test_shifted"]
    ablation = ablation_effects(decomposed["test"], records, class_texts, VOCABULARIES, heads)
    spurious = spurious_cue(
        decomposed["test_shifted"],
        shifted,
        class_texts["shape"],
        labelled_heads(heads, "background"),
        VOCABULARIES["shape"],
        VOCABULARIES["background"],
    )
    table = head_expectations(ablation, spurious)
    assert list(table.columns) == ["line", "expectation", "measured", "verdict"]
    assert len(table) == 3 and table["verdict"].isin([HOLDS, FAILS, UNTESTABLE]).all()
    assert (table["line"] == "heads").all() and table["measured"].str.len().gt(0).all()
    written = plot_head_groundtruth(heads, ablation, tmp_path / "heads.png", random_weights=True)
    assert all(path.stat().st_size > 0 for path in written)


def ablation_table(drops: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """An ablation table with plain accuracy 0.8 on both targets and the given (colour, shape) drops."""
    rows = [("none", 0, target, 0.8, 0.0) for target in ("colour", "shape")]
    for attribute, pair in drops.items():
        count = 0 if np.isnan(pair[0]) else 2
        rows += [(attribute, count, target, 0.8 - drop, drop) for target, drop in zip(("colour", "shape"), pair)]
    return pd.DataFrame(rows, columns=["ablated_attribute", "heads", "target", "accuracy", "drop"])


def spurious_table(before: float, after: float, count: int) -> pd.DataFrame:
    rows = [("mean", 0.5, 0.5), ("worst_group", before, after)]
    return pd.DataFrame(rows, columns=["row", "accuracy_before", "accuracy_after"]).assign(background_heads=count)


def test_expectation_verdicts_by_hand():
    verdicts = head_expectations(
        ablation_table({"colour": (0.3, 0.1), "shape": (0.2, 0.05), "background": (np.nan, np.nan)}),
        spurious_table(0.2, 0.4, 2),
    )["verdict"]
    assert verdicts.tolist() == [HOLDS, FAILS, HOLDS]
    verdicts = head_expectations(
        ablation_table({"colour": (np.nan, np.nan), "shape": (-0.1, -0.2), "background": (0.0, 0.0)}),
        spurious_table(0.4, 0.4, 1),
    )["verdict"]
    assert verdicts.tolist() == [UNTESTABLE, FAILS, FAILS]
    no_background = spurious_table(0.2, np.nan, 0)
    both = ablation_table({"colour": (0.1, 0.0), "shape": (0.0, 0.1), "background": (np.nan, np.nan)})
    assert head_expectations(both, no_background)["verdict"].tolist() == [HOLDS, HOLDS, UNTESTABLE]
    with pytest.raises(ValueError, match="one row"):
        head_expectations(ablation_table({"colour": (0.1, 0.0)}), no_background)
