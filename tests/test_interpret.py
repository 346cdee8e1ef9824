"""CLIP-InterpreT analyses: hand-checkable labels, metrics and searches; maps vs head terms; plots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cliplens.interpret.ablation import mean_ablation_tables
from cliplens.interpret.contributions import Contributions
from cliplens.interpret.decompose import decompose
from cliplens.interpret.figures import (
    plot_head_maps,
    plot_head_properties,
    plot_interpretability_metrics,
    plot_mean_ablation,
    plot_neighbours,
    plot_textspan,
)
from cliplens.interpret.labels import HeadLabels, PropertyEmbeddings, interpretability_metrics, label_heads
from cliplens.interpret.neighbours import head_image_neighbours, head_text_neighbours, nearest_neighbours, property_neighbours
from cliplens.interpret.token_maps import contrastive_maps, topic_maps, zero_shot_segmentation
from cliplens.models import create_tiny_clip
from cliplens.plotting import segmentation_figure
from cliplens.stored_maps import upsample_maps

E = np.eye(4, dtype=np.float32)


def metric(table: pd.DataFrame, name: str) -> pd.Series:
    return table.set_index("metric").loc[name]


def test_metrics_by_hand():
    # head 0 only colour; head 1 half colour, half shape
    table = interpretability_metrics(np.array([[1.0, 0.0], [0.5, 0.5]]), n_boot=200)
    assert metric(table, "consistency")["value"] == pytest.approx(0.75)
    assert metric(table, "head_disentanglement")["value"] == pytest.approx(0.5)  # entropies 0 and log 2
    # colour mass (1, 0.5) over heads -> (2/3, 1/3); shape mass (0, 0.5) -> (0, 1)
    colour_sharing = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)) / np.log(2)
    assert metric(table, "property_disentanglement")["value"] == pytest.approx(1 - colour_sharing / 2)
    for name in ("consistency", "head_disentanglement", "property_disentanglement"):
        row = metric(table, name)
        assert row["ci_low"] <= row["value"] <= row["ci_high"]


def test_metrics_extremes_and_bootstrap():
    disentangled = interpretability_metrics(np.eye(3), n_boot=100)
    np.testing.assert_allclose(disentangled["value"], 1.0)
    shared = interpretability_metrics(np.array([[1.0, 0, 0], [1.0, 0, 0]]), n_boot=100)
    assert metric(shared, "consistency")["value"] == 1.0
    assert metric(shared, "property_disentanglement")["value"] == pytest.approx(0.0)  # both heads share colour
    mixed = interpretability_metrics(np.full((4, 2), 0.5), n_boot=100)
    np.testing.assert_allclose(
        mixed.set_index("metric")[["value", "ci_low", "ci_high"]].loc["head_disentanglement"], 0.0, atol=1e-12
    )
    rng = np.random.default_rng(0).dirichlet(np.ones(4), size=12)
    once, again = interpretability_metrics(rng, seed=1), interpretability_metrics(rng, seed=1)
    pd.testing.assert_frame_equal(once, again)
    assert (once["ci_low"] < once["ci_high"]).all()


def properties_ab() -> PropertyEmbeddings:
    # property "colour" described by e0 (and e3), "shape" by e1
    return PropertyEmbeddings(["colour", "shape"], np.stack([E[0], E[3], E[1]]), np.array([0, 0, 1]))


def test_label_heads_by_hand():
    pool = np.stack([E[0], E[1], E[0] + 0.1 * E[1], E[1] + 0.5 * E[3]])  # colour, shape, colour, shape
    spans = pd.DataFrame(
        {
            "layer": [3, 3, 3, 3],
            "head": [0, 0, 1, 1],
            "rank": [0, 1, 0, 1],
            "text_index": [0, 2, 0, 1],
            "variance_explained": [0.3, 0.1, 0.1, 0.3],
        }
    )
    labels = label_heads(spans, pool, properties_ab())
    np.testing.assert_allclose(labels.distribution, [[1.0, 0.0], [0.25, 0.75]])
    assert labels.labels == ["colour", "shape"]
    uniform = label_heads(spans, pool, properties_ab(), weighting="uniform")
    np.testing.assert_allclose(uniform.distribution, [[1.0, 0.0], [0.5, 0.5]])
    assert uniform.labels == ["colour", "colour"]  # ties go to the first property
    frame = labels.to_frame()
    assert list(frame.columns) == ["layer", "head", "label", "consistency", "share_colour", "share_shape"]
    np.testing.assert_array_equal(labels.head_mask("shape", head_layers=(2, 3), num_heads=2), [[False, False], [False, True]])


def test_nearest_neighbours_by_hand():
    database = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.2], [1.0, 1.0]], dtype=np.float32)
    indices, scores = nearest_neighbours(database[:1], database, k=3)
    np.testing.assert_array_equal(indices, [[0, 2, 3]])
    np.testing.assert_allclose(scores[0, :2], [1.0, 2 / np.sqrt(4.04)], rtol=1e-6)
    indices, _ = nearest_neighbours(database[:1], database, k=2, exclude=[0])
    np.testing.assert_array_equal(indices, [[2, 3]])
    # per-head text neighbours rank by the dot product: the long vector 2 beats the aligned 0
    indices, scores = head_text_neighbours(database, np.array([[1.0, 0.0]]), k=2)
    np.testing.assert_array_equal(indices, [[2, 0]])
    np.testing.assert_allclose(scores, [[2.0, 1.0]])
    indices, _ = head_image_neighbours(database, [1], k=1)
    np.testing.assert_array_equal(indices, [[3]])


def test_property_neighbours_use_only_labelled_heads():
    # 4 images, 1 layer x 2 heads; head 0 (colour) says images 0 and 2 agree, head 1 pairs 0 with 1
    heads = np.zeros((4, 1, 2, 4), np.float32)
    heads[:, 0, 0] = [E[0], E[1], E[0], E[2]]
    heads[:, 0, 1] = 5 * np.stack([E[3], E[3], E[1], E[2]])
    colour = np.array([[True, False]])
    indices, scores = property_neighbours(heads, colour, [0], k=1)
    np.testing.assert_array_equal(indices, [[2]])
    np.testing.assert_allclose(scores, [[1.0]])
    indices, _ = property_neighbours(heads, ~colour, [0], k=1)
    np.testing.assert_array_equal(indices, [[1]])
    with pytest.raises(ValueError, match="no head"):
        property_neighbours(heads, np.zeros((1, 2), bool), [0])


@pytest.fixture(scope="module")
def decomposition():
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    return decompose(create_tiny_clip("vit", seed=0), x, tokens=True, last_layers=2)


def test_topic_maps_sum_to_head_terms(decomposition):
    texts = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    grid = decomposition.grid_size
    maps = topic_maps(decomposition.head_tokens, texts, grid)
    assert maps.shape == (2, 2, 4, 3, 7, 7)
    cls_term = np.einsum("bnhd,td->bnht", decomposition.head_tokens[:, :, :, 0].numpy(), texts.numpy())
    head_score = np.einsum("bnhd,td->bnht", decomposition.heads[:, list(decomposition.token_layers)].numpy(), texts.numpy())
    np.testing.assert_allclose(maps.sum(axis=(-1, -2)) + cls_term, head_score, atol=1e-6)
    contrast = contrastive_maps(decomposition.head_tokens, texts[0], texts[1], grid)
    np.testing.assert_allclose(contrast, maps[:, :, :, 0] - maps[:, :, :, 1], atol=1e-6)


def test_zero_shot_segmentation(decomposition):
    classes = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    grid = decomposition.grid_size
    scores = zero_shot_segmentation(decomposition.head_tokens, classes, grid)
    assert scores.shape == (2, 3, 7, 7)
    np.testing.assert_allclose(scores.mean(axis=1), 0.0, atol=1e-6)
    per_class = topic_maps(decomposition.head_tokens, classes, grid).sum(axis=(1, 2))  # [B, C, gh, gw]
    np.testing.assert_allclose(scores, per_class - per_class.mean(axis=1, keepdims=True), atol=1e-6)
    only_last = np.array([[False] * 4, [True] * 4])
    last = zero_shot_segmentation(decomposition.head_tokens, classes, grid, mask=only_last)
    per_class_last = topic_maps(decomposition.head_tokens[:, 1:], classes, grid).sum(axis=(1, 2))
    np.testing.assert_allclose(last, per_class_last - per_class_last.mean(1, keepdims=True), atol=1e-6)
    labels = upsample_maps(scores, (224, 224)).argmax(axis=1)
    assert labels.shape == (2, 224, 224) and labels.max() < 3


def test_plots_write_png_and_pdf(decomposition, tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((224, 224, 3))
    labels = HeadLabels(np.array([[2, 0], [3, 1]]), ["colour", "shape"], np.array([[0.7, 0.3], [0.2, 0.8]]))
    spans = pd.DataFrame({"layer": [3, 3], "head": [0, 0], "rank": [0, 1], "text": ["a", "b"], "variance_explained": [0.2, 0.1]})
    store = Contributions.from_decomposition(["a", "b"], decomposition, layers=2)
    ablation = mean_ablation_tables(store, np.array([0, 1]), np.eye(2, 64, dtype=np.float32))
    maps = topic_maps(decomposition.head_tokens, np.ones((1, 64)), decomposition.grid_size)[0, :, :, 0]
    written = [
        plot_mean_ablation(ablation, tmp_path / "ablation.png", random_weights=True),
        plot_textspan(spans, tmp_path / "textspan.png"),
        plot_head_properties(labels, tmp_path / "properties.png"),
        plot_interpretability_metrics(interpretability_metrics(labels, n_boot=50), tmp_path / "metrics.png"),
        plot_neighbours(rng.random((1, 2, 32, 32, 3)), np.array([[0.9, 0.8]]), tmp_path / "nn.png", query_images=image[None]),
        plot_neighbours(rng.random((1, 2, 32, 32, 3)), np.array([[0.9, 0.8]]), tmp_path / "tnn.png", query_titles=["a dog"]),
        plot_head_maps(image, maps, decomposition.token_layers, "topic", tmp_path / "maps.png", diverging=True),
        segmentation_figure(image[None], rng.integers(0, 3, (1, 224, 224)), {0: "a", 1: "b", 2: "c"}, tmp_path / "seg.png"),
    ]
    for paths in written:  # figures that show images are PNG only, plots also PDF
        expected = [".png"] if paths[0].stem in {"nn", "tnn", "maps", "seg"} else [".png", ".pdf"]
        assert [p.suffix for p in paths] == expected and all(p.stat().st_size > 0 for p in paths)
