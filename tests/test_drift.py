"""Semantic drift: distributions, Jensen-Shannon divergence, drift table, label flips, trajectories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from cliplens.perturbation.drift import (
    drift_distributions,
    drift_label_names,
    drift_table,
    drift_trajectories,
    js_divergence,
    label_flips,
)

LABELS = ["cat", "dog", "a blurry photo"]


def _records_and_probs() -> tuple[pd.DataFrame, np.ndarray]:
    """Image a: cat -> (seed mean) cat -> blurry -> cat -> dog; image b: dog throughout."""
    records = pd.DataFrame(
        {
            "image_id": ["a", "a", "a", "a", "a", "a", "b", "b", "b"],
            "family": ["clean", "blur", "blur", "blur", "blur", "blur", "clean", "blur", "blur"],
            "severity": [0, 1, 1, 2, 3, 4, 0, 1, 2],
            "seed": [0, 0, 1, 0, 0, 0, 0, 0, 0],
            "label_index": 0,
        }
    )
    probs = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.6, 0.3, 0.1],
            [0.4, 0.5, 0.1],
            [0.1, 0.1, 0.8],
            [0.6, 0.3, 0.1],
            [0.1, 0.8, 0.1],
            [0.2, 0.7, 0.1],
            [0.2, 0.7, 0.1],
            [0.3, 0.6, 0.1],
        ]
    )
    return records, probs


def test_drift_distributions_hand_value() -> None:
    # cosines (1, 0) and logit scale ln 3 -> softmax (3/4, 1/4); the embedding is renormalised
    probs = drift_distributions(np.array([[2.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]), np.log(3.0))
    np.testing.assert_allclose(probs, [[0.75, 0.25]], rtol=1e-6)


def test_js_divergence_properties_and_hand_value() -> None:
    p = np.array([0.2, 0.5, 0.3])
    assert js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    # m = (0.75, 0.25): KL(p||m) = log2(4/3), KL(q||m) = (log2(2/3) + 1) / 2
    expected = (np.log2(4 / 3) + (np.log2(2 / 3) + 1) / 2) / 2
    assert js_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(expected)
    assert expected == pytest.approx(0.311278, abs=1e-6)
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(4), size=10), rng.dirichlet(np.ones(4), size=10)
    np.testing.assert_allclose(js_divergence(a, b), js_divergence(b, a))
    np.testing.assert_allclose(js_divergence(a, b), jensenshannon(a, b, base=2, axis=1) ** 2)
    assert js_divergence(a, b[:1]).shape == (10,)


def test_drift_table_averages_seeds_repeats_clean_and_measures_divergence() -> None:
    records, probs = _records_and_probs()
    table = drift_table(records, probs, LABELS)
    assert table.columns.tolist() == [
        "image_id",
        "family",
        "severity",
        "n_seeds",
        "p_cat",
        "p_dog",
        "p_a blurry photo",
        "js_divergence",
        "top_label",
        "top_prob",
    ]
    a = table[table["image_id"] == "a"].set_index("severity")
    assert a.index.tolist() == [0, 1, 2, 3, 4] and (a["family"] == "blur").all()
    np.testing.assert_allclose(a.loc[1, ["p_cat", "p_dog", "p_a blurry photo"]].to_numpy(float), [0.5, 0.4, 0.1])
    assert a.loc[1, "n_seeds"] == 2
    assert a.loc[0, "js_divergence"] == 0.0
    assert a.loc[2, "js_divergence"] == pytest.approx(js_divergence([0.7, 0.2, 0.1], [0.1, 0.1, 0.8]))
    assert a["top_label"].tolist() == ["cat", "cat", "a blurry photo", "cat", "dog"]
    assert a["top_prob"].tolist() == pytest.approx([0.7, 0.5, 0.8, 0.6, 0.8])
    assert drift_label_names(table) == LABELS


def test_drift_table_rejects_mismatches() -> None:
    records, probs = _records_and_probs()
    with pytest.raises(ValueError, match="does not match"):
        drift_table(records, probs[:, :2], LABELS)
    with pytest.raises(ValueError, match="no clean row"):
        drift_table(records.iloc[1:], probs[1:], LABELS)
    with pytest.raises(ValueError, match="unique"):
        drift_table(records, probs, ["cat", "cat", "dog"])


def test_label_flips_report_the_first_change_only() -> None:
    records, probs = _records_and_probs()
    flips = label_flips(drift_table(records, probs, LABELS)).set_index("image_id")
    assert flips.loc["a", "clean_label"] == "cat"
    assert flips.loc["a", "flip_severity"] == 2 and flips.loc["a", "flipped_to"] == "a blurry photo"
    assert flips.loc["b", "clean_label"] == "dog"
    assert pd.isna(flips.loc["b", "flip_severity"]) and flips.loc["b", "flipped_to"] is None
    assert str(flips["flip_severity"].dtype) == "Int64"


def test_trajectories_project_consistently() -> None:
    records, probs = _records_and_probs()
    table = drift_table(records, probs, LABELS)
    trajectories = drift_trajectories(table)
    coords = trajectories.coords
    assert len(coords) == len(table) and {"pc1", "pc2", "severity"} <= set(coords.columns)
    np.testing.assert_allclose(
        coords[["pc1", "pc2"]].to_numpy(), trajectories.project(table[["p_cat", "p_dog", "p_a blurry photo"]].to_numpy())
    )
    np.testing.assert_allclose(trajectories.project(trajectories.mean[None]), [[0.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(trajectories.components @ trajectories.components.T, np.eye(2), atol=1e-12)
    # the principal axes of the covariance (eigh), up to sign, and their share of its trace
    probs = table[["p_cat", "p_dog", "p_a blurry photo"]].to_numpy()
    np.testing.assert_allclose(trajectories.mean, probs.mean(0))
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(probs, rowvar=False))
    top = eigenvectors[:, ::-1][:, :2].T
    np.testing.assert_allclose(np.abs(np.sum(top * trajectories.components, axis=1)), [1.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(trajectories.explained_variance_ratio, eigenvalues[::-1][:2] / eigenvalues.sum(), atol=1e-9)


def test_trajectories_of_two_labels_lie_on_one_axis() -> None:
    table = pd.DataFrame(
        {"image_id": "a", "family": "blur", "severity": [0, 1, 2], "p_x": [0.9, 0.5, 0.2], "p_y": [0.1, 0.5, 0.8]}
    )
    trajectories = drift_trajectories(table)
    np.testing.assert_allclose(trajectories.explained_variance_ratio, [1.0, 0.0], atol=1e-12)
    # distances along PC1 equal Euclidean distances between the distributions
    steps = np.diff(trajectories.coords["pc1"].to_numpy())
    np.testing.assert_allclose(np.abs(steps), [0.4 * np.sqrt(2), 0.3 * np.sqrt(2)])
