"""Attribute accuracy under perturbation on the planted world, its normalised drops and the
expectations they decide, on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cliplens.perturbation.groundtruth import attribute_accuracy, normalised_drops, perturbation_expectations


def test_attribute_accuracy_predicts_the_nearest_value_per_attribute() -> None:
    """Embeddings along axis k predict value k of each attribute; accuracy per family x severity."""
    manifest = pd.DataFrame({"image_id": ["a", "b"], "colour": ["red", "blue"], "shape": ["circle", "square"]})
    rows = pd.DataFrame(
        {"image_id": ["a", "b", "a", "b"], "family": ["clean", "clean", "blur", "blur"], "severity": [0, 0, 1, 1]}
    )
    axes = np.eye(3, dtype=np.float32)
    embeddings = axes[[0, 1, 1, 1]]  # clean: a -> 0, b -> 1; blur: both -> 1
    texts = {"colour": (["red", "blue", "green"], axes), "shape": (["square", "circle", "star"], axes)}
    table = attribute_accuracy(rows, embeddings, manifest, texts).set_index(["family", "attribute"])
    assert list(table.columns) == ["severity", "accuracy", "n", "chance"]
    # colour: clean red, blue (both right); blur blue, blue (b right). shape: clean square, circle (both wrong)
    assert table.loc[("clean", "colour"), "accuracy"] == 1.0 and table.loc[("blur", "colour"), "accuracy"] == 0.5
    assert table.loc[("clean", "shape"), "accuracy"] == 0.0 and table.loc[("blur", "shape"), "accuracy"] == 0.5
    assert (table["n"] == 2).all() and np.allclose(table["chance"], 1 / 3)


def _accuracy_table(rows: list[tuple[str, int, str, float]], chance: float = 0.25) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["family", "severity", "attribute", "accuracy"]).assign(n=100, chance=chance)


def test_normalised_drops_average_the_drop_over_the_headroom_above_chance() -> None:
    table = _accuracy_table(
        [
            ("clean", 0, "colour", 0.75),
            ("clean", 0, "shape", 0.25),  # at chance: no headroom, its drops are unknown
            ("grayscale", 1, "colour", 0.5),
            ("grayscale", 2, "colour", 0.25),
            ("grayscale", 1, "shape", 0.25),
            ("grayscale", 2, "shape", 0.2),
        ]
    )
    drops = normalised_drops(table)
    assert drops.loc["grayscale", "colour"] == pytest.approx((0.25 / 0.5 + 0.5 / 0.5) / 2)
    assert np.isnan(drops.loc["grayscale", "shape"])


def test_expectations_give_a_verdict_per_grouped_family() -> None:
    table = _accuracy_table(
        [
            ("clean", 0, "colour", 0.95),
            ("clean", 0, "shape", 0.85),
            ("grayscale", 3, "colour", 0.3),  # colour drop 0.93, shape drop 0.0: holds
            ("grayscale", 3, "shape", 0.85),
            ("gaussian_blur", 3, "colour", 0.5),  # shape drop 0.17 < colour drop 0.64: does not hold
            ("gaussian_blur", 3, "shape", 0.75),
            ("brightness", 3, "colour", 0.1),  # in neither group: no expectation
            ("brightness", 3, "shape", 0.1),
        ]
    )
    expectations = perturbation_expectations(table).set_index("expectation")
    assert list(expectations.index) == [
        "gaussian_blur lowers shape accuracy more than colour accuracy",
        "grayscale lowers colour accuracy more than shape accuracy",
    ]
    assert expectations["verdict"].tolist() == ["does not hold", "holds"]
    assert expectations["measured"].iloc[1] == "normalised drop colour 0.929, shape 0.000"
    at_chance = table.assign(accuracy=np.where(table["family"] == "clean", 0.25, table["accuracy"]))
    assert set(perturbation_expectations(at_chance)["verdict"]) == {"not testable (clean accuracy at chance)"}
