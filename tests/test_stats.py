"""Perturbation statistics against values computed by hand on tiny inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cliplens.metrics import bootstrap_mean_ci
from cliplens.perturbation import statistics
from cliplens.perturbation.statistics import METRICS, aggregate, holm_adjust, per_image_metrics, susceptibility, top_k

TEXT = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
SCALE = 10.0


def _records() -> tuple[pd.DataFrame, np.ndarray]:
    """Images a (label 0), b (label 1), c (unlabeled): clean + blur severity 1, D = 2."""
    records = pd.DataFrame(
        {
            "image_id": ["a", "a", "b", "b", "c", "c"],
            "label_index": [0, 0, 1, 1, -1, -1],
            "family": ["clean", "blur"] * 3,
            "severity": [0, 1] * 3,
            "seed": 0,
        }
    )
    embeddings = np.array([[1, 0], [0.6, 0.8], [0, 1], [0.8, -0.6], [1, 0], [0, 1]], dtype=np.float32)
    return records, embeddings


def _softmax_prob(logits: list[float], index: int) -> float:
    return float(np.exp(logits[index]) / np.exp(logits).sum())


def test_per_image_metrics_match_hand_values() -> None:
    records, embeddings = _records()
    out = per_image_metrics(records, embeddings, TEXT, SCALE)
    # a/blur: cosines to the labels (0.6, 0.8, -0.6); b/blur: (0.8, -0.6, -0.8)
    np.testing.assert_allclose(out["self_similarity"], [1, 0.6, 1, -0.6, 1, 0], atol=1e-6)
    np.testing.assert_allclose(out["alignment"][:4], [1, 0.6, 1, -0.6], atol=1e-6)
    np.testing.assert_allclose(out["alignment_clean"][:4], [1, 1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(out["alignment_change"][:4], [0, -0.4, 0, -1.6], atol=1e-6)
    assert out["rank"][:4].tolist() == [1, 2, 1, 2]
    assert out["top1"][:4].tolist() == [True, False, True, False]
    assert out["top5"][:4].tolist() == [True, True, True, True]
    np.testing.assert_allclose(out["margin"][:4], [10, -2, 10, -14], atol=1e-4)
    expected_prob = [
        _softmax_prob([10, 0, -10], 0),
        _softmax_prob([6, 8, -6], 0),
        _softmax_prob([0, 10, 0], 1),
        _softmax_prob([8, -6, -8], 1),
    ]
    np.testing.assert_allclose(out["true_prob"][:4], expected_prob, rtol=1e-5)
    assert out["prediction"].tolist() == [0, 1, 1, 0, 0, 1]


def test_unlabeled_rows_get_missing_label_metrics() -> None:
    records, embeddings = _records()
    unlabeled = per_image_metrics(records, embeddings, TEXT, SCALE).iloc[4:]
    for column in ("alignment", "alignment_clean", "alignment_change", "margin", "true_prob"):
        assert unlabeled[column].isna().all(), column
    for column in ("rank", "top1", "top5"):
        assert unlabeled[column].isna().all(), column
    assert unlabeled["self_similarity"].notna().all()


def test_rank_ties_favour_the_true_label_and_unnormalised_inputs_are_normalised() -> None:
    records = pd.DataFrame({"image_id": ["a"], "label_index": [1], "family": ["clean"], "severity": [0], "seed": [0]})
    out = per_image_metrics(records, np.array([[3.0, 3.0]], np.float32), TEXT, SCALE)
    assert out["rank"].tolist() == [1] and out["top1"].tolist() == [True]
    np.testing.assert_allclose(out["alignment"], [np.sqrt(0.5)], rtol=1e-6)
    np.testing.assert_allclose(out["margin"], [0.0], atol=1e-5)


def test_chunked_computation_equals_single_block(monkeypatch: pytest.MonkeyPatch) -> None:
    records, embeddings = _records()
    whole = per_image_metrics(records, embeddings, TEXT, SCALE)
    monkeypatch.setattr(statistics, "_ROW_CHUNK", 4)
    pd.testing.assert_frame_equal(per_image_metrics(records, embeddings, TEXT, SCALE), whole)


def test_clean_row_is_matched_per_model() -> None:
    records, embeddings = _records()
    both = pd.concat([records.assign(model="m1"), records.assign(model="m2")], ignore_index=True)
    second = embeddings.copy()
    second[0] = [0.6, 0.8]  # m2's clean embedding of image a equals its blurred one
    out = per_image_metrics(both, np.concatenate([embeddings, second]), TEXT, SCALE)
    np.testing.assert_allclose(out.loc[out["model"] == "m1", "self_similarity"].iloc[1], 0.6, atol=1e-6)
    np.testing.assert_allclose(out.loc[out["model"] == "m2", "self_similarity"].iloc[1], 1.0, atol=1e-6)


def test_missing_or_duplicate_clean_rows_are_rejected() -> None:
    records, embeddings = _records()
    with pytest.raises(ValueError, match="no clean row"):
        per_image_metrics(records.iloc[1:], embeddings[1:], TEXT, SCALE)
    doubled = pd.concat([records, records.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="more than one clean row"):
        per_image_metrics(doubled, np.concatenate([embeddings, embeddings[:1]]), TEXT, SCALE)


def test_holm_matches_hand_example() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm_adjust(np.array([0.01, 0.04, 0.03, 0.005])), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm_adjust(np.array([0.01, np.nan, 0.04])), [0.02, np.nan, 0.04])
    np.testing.assert_allclose(holm_adjust(np.array([0.5, 0.6])), [1.0, 1.0])
    assert np.isnan(holm_adjust(np.array([np.nan]))).all()
    assert holm_adjust(np.array([0.2])).tolist() == [0.2]


def test_bootstrap_ci_contains_mean_shrinks_with_n_and_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.normal(size=(20, 1)), rng.normal(size=(2000, 1))
    low_s, high_s = bootstrap_mean_ci(small, 1000, np.random.default_rng(0))
    low_l, high_l = bootstrap_mean_ci(large, 1000, np.random.default_rng(0))
    assert low_s[0] < small.mean() < high_s[0]
    assert low_l[0] < large.mean() < high_l[0]
    assert (high_l - low_l)[0] < (high_s - low_s)[0] / 4  # ~ 1 / sqrt(100)
    again = bootstrap_mean_ci(small, 1000, np.random.default_rng(0))
    np.testing.assert_array_equal(again[0], low_s)
    # theoretical 95% half-width of the mean is 1.96 / sqrt(n)
    assert (high_l - low_l)[0] == pytest.approx(2 * 1.96 / np.sqrt(2000), rel=0.15)


def test_bootstrap_ci_handles_constants_missing_values_and_tiny_samples() -> None:
    values = np.array([[1.0, np.nan, 2.0], [1.0, np.nan, np.nan], [1.0, 5.0, np.nan], [1.0, 7.0, np.nan]])
    low, high = bootstrap_mean_ci(values, 200, np.random.default_rng(0))
    assert (low[0], high[0]) == (1.0, 1.0)
    assert 5.0 <= low[1] <= high[1] <= 7.0
    assert np.isnan(low[2]) and np.isnan(high[2])


def _per_image(changes: dict[str, list[float]], seeds: int = 1) -> pd.DataFrame:
    """A per-image table with given alignment changes per family (severity 1); clean alignment 0.5."""
    rows = []
    n_images = max(len(values) for values in changes.values())
    for i in range(n_images):
        rows.append(dict(image_id=f"i{i}", family="clean", severity=0, seed=0, alignment=0.5))
    for family, values in changes.items():
        for i, change in enumerate(values):
            for seed in range(seeds):
                rows.append(dict(image_id=f"i{i}", family=family, severity=1, seed=seed, alignment=0.5 + change))
    table = pd.DataFrame(rows).assign(label_index=0, self_similarity=0.9, alignment_clean=0.5, rank=1, margin=1.0, true_prob=0.6)
    table["alignment_change"] = table["alignment"] - 0.5
    table["rank"] = np.where(table["alignment"] < 0.4, 2, 1)
    table["top1"] = table["rank"] == 1
    table["top5"] = True
    return table


def test_aggregate_wilcoxon_holm_and_degenerate_cases() -> None:
    changes = {
        "blur": [-0.1 * (k + 1) for k in range(8)],  # all negative, n = 8: exact p = 2 / 2^8
        "fog": [0.01 * (k + 1) for k in range(7)],  # all positive, n = 7: exact p = 2 / 2^7
        "flat": [0.0] * 8,
        "tiny": [0.1, 0.2, 0.3],
    }
    table = aggregate(_per_image(changes), n_boot=200).set_index("family")
    assert table.loc["blur", "wilcoxon_p"] == pytest.approx(2 / 256)
    assert table.loc["fog", "wilcoxon_p"] == pytest.approx(2 / 128)
    # Holm over the two valid tests: 2 x 0.0078125 = 0.015625, then max(0.015625, 0.015625)
    assert table.loc["blur", "wilcoxon_p_holm"] == pytest.approx(0.015625)
    assert table.loc["fog", "wilcoxon_p_holm"] == pytest.approx(0.015625)
    assert np.isnan(table.loc["flat", "wilcoxon_p"]) and table.loc["flat", "wilcoxon_note"] == "all differences zero"
    assert np.isnan(table.loc["tiny", "wilcoxon_p_holm"]) and "fewer than 6" in table.loc["tiny", "wilcoxon_note"]
    assert table.loc["clean", "wilcoxon_note"] == "clean reference"
    assert table.index[0] == "clean"


def test_holm_corrects_across_the_families_of_one_severity_only() -> None:
    """Severity 1 holds two tests (blur, fog), severity 2 one (blur): Holm doubles the smaller p of
    severity 1 and leaves severity 2's alone."""
    severity_one = _per_image({"blur": [-0.1 * (k + 1) for k in range(8)], "fog": [0.01 * (k + 1) for k in range(7)]})
    blur = severity_one[severity_one["family"] == "blur"]
    severity_two = blur.assign(severity=2, alignment=blur["alignment"] - 0.01, alignment_change=blur["alignment_change"] - 0.01)
    table = aggregate(pd.concat([severity_one, severity_two], ignore_index=True), n_boot=50).set_index(["family", "severity"])
    assert table.loc[("blur", 2), "wilcoxon_p_holm"] == pytest.approx(table.loc[("blur", 2), "wilcoxon_p"])
    assert table.loc[("blur", 1), "wilcoxon_p_holm"] == pytest.approx(2 * 2 / 256)
    assert table.loc[("fog", 1), "wilcoxon_p_holm"] == pytest.approx(2 / 128)


def test_aggregate_means_accuracy_drop_and_seed_averaging() -> None:
    per_image = _per_image({"blur": [-0.2, 0.0, 0.0, 0.1]}, seeds=2)
    # image i1 seed 1 loses its top-1 prediction: per-image top1 of i1 is the seed mean 0.5
    per_image.loc[(per_image["image_id"] == "i1") & (per_image["seed"] == 1), ["rank", "top1"]] = [3, False]
    table = aggregate(per_image, n_boot=500).set_index("family")
    blur = table.loc["blur"]
    assert blur["n_rows"] == 8 and blur["n_images"] == 4 and blur["n_labeled"] == 4
    assert blur["alignment_mean"] == pytest.approx(0.5 + (-0.2 + 0.1) / 4)
    assert blur["alignment_change_mean"] == pytest.approx(-0.025)
    assert blur["top1_mean"] == pytest.approx((0 + 0.5 + 1 + 1) / 4)  # i0 alignment 0.3 -> rank 2
    assert blur["top1_drop_mean"] == pytest.approx(1 - 0.625)
    assert blur["rank_mean"] == pytest.approx((2 + 2 + 1 + 1) / 4)
    assert table.loc["clean", "top1_mean"] == 1.0 and table.loc["clean", "top1_drop_mean"] == 0.0
    for metric in METRICS:
        low, mean, high = (blur[f"{metric}_{part}"] for part in ("ci_low", "mean", "ci_high"))
        assert low <= mean + 1e-12 and mean <= high + 1e-12, metric


def test_aggregate_groups_per_model_and_is_seeded() -> None:
    per_image = pd.concat(
        [_per_image({"blur": [-0.1] * 6}).assign(model="m1"), _per_image({"blur": [0.1, 0.2] * 3}).assign(model="m2")],
        ignore_index=True,
    )
    table = aggregate(per_image, n_boot=100, seed=3)
    assert list(table[["model", "family"]].itertuples(index=False, name=None)) == [
        ("m1", "clean"),
        ("m1", "blur"),
        ("m2", "clean"),
        ("m2", "blur"),
    ]
    # per model, blur is the only valid test of severity 1, so Holm leaves its p unchanged
    blur = table[table["family"] == "blur"]
    np.testing.assert_allclose(blur["wilcoxon_p_holm"], blur["wilcoxon_p"])
    pd.testing.assert_frame_equal(table, aggregate(per_image, n_boot=100, seed=3))
    assert not table.equals(aggregate(per_image, n_boot=100, seed=4))


def _curves(drops: dict[str, list[float]], seeds: int = 1) -> pd.DataFrame:
    """A per-image table whose alignment drops (and 1 - self-similarity) at severities 1.. are given."""
    rows = []
    for image_id, values in drops.items():
        rows.append(dict(image_id=image_id, family="clean", severity=0, seed=0, drop=0.0))
        for severity, drop in enumerate(values, start=1):
            for seed in range(seeds):
                rows.append(dict(image_id=image_id, family="noise", severity=severity, seed=seed, drop=drop))
    table = pd.DataFrame(rows)
    return table.assign(alignment_clean=0.3, alignment=0.3 - table["drop"], self_similarity=1 - table["drop"])


def test_susceptibility_hand_values_bounds_and_ordering() -> None:
    per_image = _curves({"flat": [0.2] * 5, "worst": [2.0] * 5, "better": [-0.1] * 5, "none": [0.0] * 5})
    table = susceptibility(per_image, "alignment_drop").set_index("image_id")
    # trapezoid over 0..5 of (0, .2, .2, .2, .2, .2) = 0.1 + 4 * 0.2 = 0.9; max area 2 * 5 = 10
    assert table.loc["flat", "susceptibility"] == pytest.approx(0.09)
    assert table.loc["worst", "susceptibility"] == pytest.approx(0.9)
    assert table.loc["better", "susceptibility"] == 0.0
    assert table.loc["better", "net_change"] == pytest.approx(-0.045)
    assert table.loc["none", "susceptibility"] == 0.0
    assert (table["metric"] == "alignment_drop").all()
    embedding = susceptibility(per_image, "embedding_drop").set_index("image_id")
    assert embedding.loc["flat", "susceptibility"] == pytest.approx(0.09)


def test_susceptibility_bounds_on_random_curves_and_seed_average() -> None:
    rng = np.random.default_rng(0)
    curves = {f"i{k}": list(rng.uniform(-2, 2, size=5)) for k in range(50)}
    table = susceptibility(_curves(curves), "alignment_drop")
    assert table["susceptibility"].between(0, 1).all() and table["net_change"].between(-1, 1).all()
    two_seeds = _curves({"a": [0.2] * 5}, seeds=2)
    two_seeds.loc[two_seeds["seed"] == 1, "alignment"] = 0.3 - 0.3
    two_seeds.loc[two_seeds["seed"] == 0, "alignment"] = 0.3 - 0.1
    assert susceptibility(two_seeds)["susceptibility"].iloc[0] == pytest.approx(0.09)


def test_susceptibility_missing_severity_gives_nan_and_bad_metric_raises() -> None:
    per_image = _curves({"a": [0.2] * 5, "b": [0.2] * 5})
    per_image = per_image[~((per_image["image_id"] == "b") & (per_image["severity"] == 3))]
    table = susceptibility(per_image).set_index("image_id")
    assert np.isnan(table.loc["b", "susceptibility"]) and table.loc["a", "susceptibility"] == pytest.approx(0.09)
    with pytest.raises(ValueError, match="metric"):
        susceptibility(per_image, "accuracy")


def test_top_k_picks_extremes_with_tie_break() -> None:
    table = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "g", "d", "e", "f", "h"],
            "family": "noise",
            "metric": "alignment_drop",
            "susceptibility": [0.5, 0.1, 0.0, 0.0, 0.0, 0.3, 0.3, np.nan],
            "net_change": [0.5, 0.1, -0.1, -0.2, -0.2, 0.3, 0.4, 0.0],
        }
    )
    top = top_k(table, 3)
    susceptible = top[top["which"] == "most_susceptible"]
    robust = top[top["which"] == "most_robust"]
    # equal susceptibility: the larger net change is more susceptible (f before e), the smaller more
    # robust (d and g before c); equal in both: the image id decides (d before g, whatever the input order)
    assert susceptible["image_id"].tolist() == ["a", "f", "e"] and susceptible["rank"].tolist() == [1, 2, 3]
    assert robust["image_id"].tolist() == ["d", "g", "c"] and robust["rank"].tolist() == [1, 2, 3]
    assert "h" not in set(top["image_id"])  # no score, not ranked
