"""Tests of cliplens.metrics and cliplens.explain.sanity on hand-computable arrays, the real coco128 masks and a tiny CLIP."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED_DATASETS
from scipy import stats

from cliplens.explain.sanity import cascade_stages, map_similarity, randomise_layers_cascade
from cliplens.image_files import load_class_mask
from cliplens.metrics import average_precision, binary_metrics, deletion_insertion, miou, summarise

COCO128 = SHARED_DATASETS / "coco128"
needs_coco128 = pytest.mark.skipif(not COCO128.is_dir(), reason="coco128 not available")


def brute_force_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP = sum over distinct thresholds t (descending) of (R(t) - R(previous t)) * P(t)."""
    ap, previous_recall = 0.0, 0.0
    for threshold in np.unique(scores)[::-1]:
        predicted = scores >= threshold
        true_positives = (predicted & labels).sum()
        recall = true_positives / labels.sum()
        ap += (recall - previous_recall) * true_positives / predicted.sum()
        previous_recall = recall
    return ap


# --------------------------------------------------------------------------- binary metrics


def hand_example() -> tuple[np.ndarray, np.ndarray]:
    """4x4 map: 1 on the top-left 2x2 block, 0.5 at (3, 3); mask: rows 0-1, columns 0-2."""
    saliency = np.zeros((4, 4))
    saliency[:2, :2] = 1.0
    saliency[3, 3] = 0.5
    mask = np.zeros((4, 4), bool)
    mask[:2, :3] = True
    return saliency[None], mask[None]


def test_binary_metrics_hand_values() -> None:
    saliency, mask = hand_example()
    # mean = 4.5 / 16, so the prediction is the 2x2 block plus (3, 3): 5 pixels
    metrics = binary_metrics(saliency, mask)
    assert metrics["iou"][0] == pytest.approx(4 / 7)
    assert metrics["pixel_accuracy"][0] == pytest.approx(13 / 16)
    assert metrics["energy_in_mask"][0] == pytest.approx(4 / 4.5)
    # thresholds 1 (4 of 6 positives, precision 1) and 0 (last 2 positives, precision 6 / 16)
    assert metrics["average_precision"][0] == pytest.approx((4 * 1.0 + 2 * 6 / 16) / 6)
    assert metrics["pointing_hit"][0] == 1.0


def test_threshold_is_strictly_above_the_mean() -> None:
    saliency = np.array([[[1.0, 0.5], [0.5, 0.0]]])  # mean 0.5: only the 1.0 pixel is predicted
    mask = np.array([[[True, True], [False, False]]])
    metrics = binary_metrics(saliency, mask)
    assert metrics["iou"][0] == pytest.approx(1 / 2)
    assert metrics["pixel_accuracy"][0] == pytest.approx(3 / 4)


def test_binary_metrics_accepts_torch_and_is_per_map() -> None:
    saliency, mask = hand_example()
    stacked = np.concatenate([saliency, 1.0 - saliency])
    masks = np.concatenate([mask, mask])
    from_numpy = binary_metrics(stacked, masks)
    from_torch = binary_metrics(torch.from_numpy(stacked).float(), torch.from_numpy(masks))
    for name in from_numpy:
        np.testing.assert_allclose(from_torch[name], from_numpy[name])
    assert from_numpy["iou"][1] != pytest.approx(from_numpy["iou"][0])


def test_average_precision_matches_brute_force_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((6, 200)), 1)  # quantised: many ties
    labels = rng.random((6, 200)) < 0.3
    expected = [brute_force_average_precision(s, y) for s, y in zip(scores, labels)]
    np.testing.assert_allclose(average_precision(scores, labels), expected)


def test_perfect_and_empty_masks() -> None:
    mask = np.zeros((2, 8, 8), bool)
    mask[0, 2:5, 3:6] = True
    metrics = binary_metrics(mask[[0, 0]].astype(float), mask)
    for name in ("iou", "pixel_accuracy", "average_precision", "pointing_hit", "energy_in_mask"):
        assert metrics[name][0] == 1.0, name
    for name in ("iou", "average_precision", "pointing_hit", "energy_in_mask"):
        assert np.isnan(metrics[name][1]), name
    assert metrics["pixel_accuracy"][1] == pytest.approx(1.0 - mask[0].mean())


@pytest.mark.parametrize(
    ("peak", "hit"),
    [((20, 5), 1.0), ((20, 4), 0.0), ((10, 11), 1.0), ((9, 9), 0.0), ((25, 25), 1.0)],
)
def test_pointing_game_tolerance_is_15_px(peak: tuple[int, int], hit: float) -> None:
    # object: rows and columns 20-29; (20, 5) is 15 px away, (20, 4) 16, (10, 11) sqrt(181), (9, 9) sqrt(242)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 20:30, 20:30] = True
    masks[1, 20:30, 0:10] = True  # another map's object right under the peak must not count
    maps = np.zeros((2, 64, 64))
    maps[0][peak] = 1.0
    maps[1, 25, 5] = 1.0
    metrics = binary_metrics(maps, masks)
    assert metrics["pointing_hit"][0] == hit
    assert metrics["pointing_hit"][1] == 1.0


# --------------------------------------------------------------------------- segmentation


def test_miou_hand_values_and_ignore_index() -> None:
    gt = np.array([[[1, 1, 2, 1], [2, 2, 0, 0]]])
    pred = np.array([[[1, 2, 2, 3], [2, 1, 1, 1]]])
    # (gt, pred) of the valid pixels (gt != 0): (1,1) (1,2) (2,2) (1,3) (2,2) (2,1)
    # class 1: TP 1, union = gt 3 + pred 2 - 1 = 4; class 2: TP 2, union = 3 + 3 - 2 = 4;
    # class 3 is only predicted: not in the mean
    result = miou(pred, gt, num_classes=4)
    assert result["per_class_iou"][1] == pytest.approx(1 / 4)
    assert result["per_class_iou"][2] == pytest.approx(2 / 4)
    assert np.isnan(result["per_class_iou"][3]) and np.isnan(result["per_class_iou"][0])
    assert result["miou"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert result["pixel_accuracy"] == pytest.approx(3 / 6)


def test_miou_accumulates_over_images_of_different_sizes() -> None:
    pred = [np.array([[1, 1]]), np.array([[2], [1]])]
    gt = [np.array([[1, 2]]), np.array([[2], [2]])]
    # class 1: TP 1, gt 1, pred 3 -> 1/3; class 2: TP 1, gt 3, pred 1 -> 1/3
    result = miou(pred, gt, num_classes=3, ignore_index=None)
    assert result["miou"] == pytest.approx(1 / 3)
    assert result["pixel_accuracy"] == pytest.approx(2 / 4)
    with pytest.raises(ValueError):
        miou([np.array([[5]])], [np.array([[1]])], num_classes=3)


# --------------------------------------------------------------------------- deletion / insertion


def region_score(region: torch.Tensor):
    """Score = mean image value inside ``region [H, W]``, recording the batch sizes it sees."""
    seen: list[int] = []

    def score(batch: torch.Tensor, image_index: torch.Tensor | None = None) -> torch.Tensor:
        seen.append(batch.shape[0])
        return batch[:, :, region].mean(dim=(1, 2))

    return score, seen


def test_deletion_insertion_exact_small_case() -> None:
    images = torch.ones(1, 3, 4, 4)
    saliency = torch.arange(16, dtype=torch.float32).flip(0).view(1, 4, 4) / 15  # raster order
    region = torch.zeros(4, 4, dtype=torch.bool)
    region[0] = True  # the 4 most salient pixels
    score, _ = region_score(region)
    good_del, _, good = deletion_insertion(images, saliency, score, steps=4, baseline_insert="zero")
    bad_del, _, bad = deletion_insertion(images, 1 - saliency, score, steps=4, baseline_insert="zero")
    np.testing.assert_allclose(good["fraction"], [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(good["deletion"][0], [1, 0, 0, 0, 0])
    np.testing.assert_allclose(good["insertion"][0], [0, 1, 1, 1, 1])
    np.testing.assert_allclose(bad["deletion"][0], [1, 1, 1, 1, 0])
    assert good_del[0] == pytest.approx(0.125)
    assert bad_del[0] == pytest.approx(0.875)


def test_deletion_insertion_orders_good_random_and_inverted_maps() -> None:
    generator = torch.Generator().manual_seed(0)
    n_images, size = 3, 32
    region = torch.zeros(size, size, dtype=torch.bool)
    region[8:16, 10:20] = True
    images = 0.1 * torch.rand(n_images, 3, size, size, generator=generator)
    images[:, :, region] += 0.9  # a bright object that blurring dims
    good = region.float().expand(n_images, -1, -1) + 0.01 * torch.rand(n_images, size, size, generator=generator)
    random = torch.rand(n_images, size, size, generator=generator)
    score, seen = region_score(region)
    results = {
        name: deletion_insertion(images, m, score, steps=10, blur_sigma=2.0, batch_size=8)
        for name, m in {"good": good, "random": random, "inverted": 1 - good}.items()
    }
    # batched: 3 images x 11 steps = 33 pairs -> 5 calls of at most 8, per curve and map
    assert max(seen) == 8 and len(seen) == 3 * 2 * math.ceil(33 / 8)
    deletion = {k: v[0] for k, v in results.items()}
    insertion = {k: v[1] for k, v in results.items()}
    assert np.all(deletion["good"] < deletion["random"]) and np.all(deletion["random"] < deletion["inverted"])
    assert np.all(insertion["good"] > insertion["random"]) and np.all(insertion["random"] > insertion["inverted"])
    curves = results["good"][2]
    assert curves["deletion"].shape == curves["insertion"].shape == (n_images, 11)
    np.testing.assert_allclose(curves["deletion"][:, 0], score(images).numpy(), rtol=1e-6)
    np.testing.assert_allclose(curves["deletion"][:, -1], 0.0)
    np.testing.assert_allclose(curves["insertion"][:, -1], score(images).numpy(), rtol=1e-6)


def test_deletion_insertion_does_not_depend_on_batch_size() -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 12, 12, generator=generator)
    maps = torch.rand(2, 12, 12, generator=generator)
    region = torch.zeros(12, 12, dtype=torch.bool)
    region[2:6, 3:9] = True
    score, _ = region_score(region)
    one = deletion_insertion(images, maps, score, steps=6, blur_sigma=1.0, batch_size=1)
    many = deletion_insertion(images, maps, score, steps=6, blur_sigma=1.0, batch_size=100)
    for a, b in zip(one[:2], many[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError):
        deletion_insertion(images, maps, score, baseline_delete="mean")


# --------------------------------------------------------------------------- summaries


def test_summarise_mean_and_seeded_ci() -> None:
    rng = np.random.default_rng(0)
    per_map = pd.DataFrame(
        {
            "model": np.repeat(["a", "b"], 40),
            "method": np.tile(np.repeat(["raw", "surgery"], 20), 2),
            "iou": rng.random(80),
            "pointing_hit": (rng.random(80) < 0.5).astype(float),
        }
    )
    per_map.loc[3, "iou"] = np.nan
    summary = summarise(per_map)
    assert len(summary) == 4 * 2
    assert list(summary.columns) == ["model", "method", "metric", "mean", "ci_low", "ci_high", "n"]
    assert (summary["ci_low"] <= summary["mean"]).all() and (summary["mean"] <= summary["ci_high"]).all()
    assert (summary["ci_low"] < summary["ci_high"]).all()
    row = summary[(summary.model == "a") & (summary.method == "raw") & (summary.metric == "iou")].iloc[0]
    assert row["n"] == 19 and row["mean"] == pytest.approx(per_map.iou[:20].mean())
    pd.testing.assert_frame_equal(summary, summarise(per_map))
    only_b = summarise(per_map[per_map.model == "b"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(only_b, summary[summary.model == "b"].reset_index(drop=True))


def test_summarise_ci_of_constant_values_is_a_point_and_needs_two_values() -> None:
    per_map = pd.DataFrame({"model": ["a"] * 10 + ["b"], "method": "m", "iou": [0.3] * 10 + [0.5]})
    summary = summarise(per_map).set_index("model")
    assert summary.loc["a", ["ci_low", "ci_high"]].tolist() == pytest.approx([0.3, 0.3])
    assert summary.loc["b", "mean"] == 0.5 and np.isnan(summary.loc["b", "ci_low"])


def test_summarise_ci_has_the_normal_width_for_large_samples() -> None:
    values = np.random.default_rng(1).normal(size=400)
    per_map = pd.DataFrame({"model": "a", "method": "m", "score": values})
    row = summarise(per_map, n_boot=4000).iloc[0]
    normal_width = 2 * 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert (row["ci_high"] - row["ci_low"]) / normal_width == pytest.approx(1.0, abs=0.06)


# --------------------------------------------------------------------------- coco128


@needs_coco128
def test_real_coco128_mask_loaded_resized_and_scored() -> None:
    path = COCO128 / "semantic_segmentation" / "masks" / "train2017" / "000000000009.png"
    full = load_class_mask(path)
    assert full.shape == (480, 640) and set(np.unique(full)) == {0, 51, 55, 56, 189, 196}
    resized = load_class_mask(path, size=(224, 224))
    assert resized.shape == (224, 224) and set(np.unique(resized)) <= set(np.unique(full))
    masks = resized[None][..., None, :, :] == np.asarray([51, 189, 1]).reshape(-1, 1, 1)
    assert masks.shape == (1, 3, 224, 224) and masks.dtype == bool
    assert not masks[0, 2].any()  # no person in this image
    perfect = binary_metrics(masks[0, :2].astype(float), masks[0, :2])
    for name in ("iou", "pixel_accuracy", "average_precision", "pointing_hit", "energy_in_mask"):
        np.testing.assert_allclose(perfect[name], 1.0, err_msg=name)
    inverted = binary_metrics(1.0 - masks[0, :2], masks[0, :2])
    np.testing.assert_allclose(inverted["iou"], 0.0)
    np.testing.assert_allclose(inverted["energy_in_mask"], 0.0)
    np.testing.assert_allclose(inverted["average_precision"], masks[0, :2].mean(axis=(1, 2)))


# --------------------------------------------------------------------------- sanity check


def test_map_similarity_matches_scipy_and_extremes() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((3, 16, 16))
    b = np.clip(a + 0.3 * rng.random((3, 16, 16)), 0, 1)
    similarity = map_similarity(a, torch.from_numpy(b))
    expected = [stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)]
    np.testing.assert_allclose(similarity["spearman"], expected)
    same = map_similarity(a, a)
    np.testing.assert_allclose(same["spearman"], 1.0)
    np.testing.assert_allclose(same["ssim"], 1.0)
    np.testing.assert_allclose(map_similarity(a, 1 - a)["spearman"], -1.0)
    assert np.all(similarity["ssim"] < 1.0)
    assert np.isnan(map_similarity(np.ones((16, 16)), a[0])["spearman"])


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_randomise_layers_cascade_is_cumulative_top_down(kind: str) -> None:
    from cliplens.models import create_tiny_clip

    model = create_tiny_clip(kind, seed=0, image_size=64)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    stages = cascade_stages(model.visual)

    def changed_stages(copy: torch.nn.Module) -> list[bool]:
        state = copy.state_dict()
        return [
            any(
                not torch.equal(state[k], original[k])
                for k in original
                if original[k].is_floating_point()
                and any(k == f"visual.{name}" or k.startswith(f"visual.{name}.") for name in names)
            )
            for _, names in stages
        ]

    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        reference = model.encode_image(image)
    labels = []
    for index, (label, randomised) in enumerate(randomise_layers_cascade(model, seed=0)):
        labels.append(label)
        assert changed_stages(randomised) == [i <= index for i in range(len(stages))]
        state = randomised.state_dict()
        assert all(torch.equal(state[k], original[k]) for k in original if not k.startswith("visual."))
        with torch.no_grad():
            assert not torch.allclose(randomised.encode_image(image), reference)
    assert labels == [label for label, _ in stages] and labels[-1] in ("embedding", "stem")
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_randomise_layers_cascade_is_seeded() -> None:
    from cliplens.models import create_tiny_clip

    model = create_tiny_clip("vit", seed=0, image_size=64)

    def head_projection(seed: int) -> torch.Tensor:
        _, randomised = next(randomise_layers_cascade(model, seed=seed))
        return randomised.visual.proj

    assert torch.equal(head_projection(3), head_projection(3))
    assert not torch.equal(head_projection(3), head_projection(4))
