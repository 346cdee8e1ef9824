"""Stored maps are rendered and segmented without torch exactly as the live maps are with torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cliplens.maps import render_scores, segment
from cliplens.stored_maps import ExplanationScores, bilinear_weights, render_maps, upsample_maps


@pytest.mark.parametrize(("grid", "size"), [((7, 7), (224, 224)), ((14, 9), (100, 301)), ((5, 5), (5, 5)), ((12, 10), (7, 4))])
def test_upsampling_is_torch_bilinear_with_centres_aligned(grid, size):
    maps = np.random.default_rng(0).normal(size=(3, 2, *grid)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(maps), size=size, mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(upsample_maps(maps, size), expected, atol=1e-5, rtol=0)  # float rounding


def test_bilinear_weights_are_a_partition_of_unity_and_the_identity_at_equal_size():
    weights = bilinear_weights(7, 31)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    assert (weights >= 0).all() and (np.count_nonzero(weights, axis=1) <= 2).all()
    np.testing.assert_array_equal(bilinear_weights(6, 6), np.eye(6, dtype=np.float32))


def test_rendering_matches_the_live_rendering():
    scores = np.random.default_rng(1).normal(size=(4, 3, 7, 7)).astype(np.float32)
    scores[0, 0] = 2.5  # a constant map renders as 0, as the live one does
    expected = render_scores(torch.from_numpy(scores), (64, 48)).numpy()
    rendered = render_maps(scores, (64, 48))
    np.testing.assert_allclose(rendered, expected, atol=2e-6, rtol=0)
    assert rendered.min() >= 0 and rendered.max() <= 1 + 1e-6 and not rendered[0, 0].any()


@pytest.mark.parametrize("normalised", [True, False])
def test_segmentation_matches_the_live_one_in_every_chunking(normalised):
    scores = np.random.default_rng(2).normal(size=(5, 4, 7, 7)).astype(np.float32)
    stored = ExplanationScores([str(i) for i in range(5)], list("abcd"), (56, 56), {"m": scores}, np.eye(4), {"m": normalised})
    live = torch.from_numpy(scores)
    maps = render_scores(live, (56, 56)) if normalised else F.interpolate(live, size=(56, 56), mode="bilinear")
    expected = segment(maps).numpy()
    for chunk in (None, 2, 5):
        segmentation = stored.segmentation("m", chunk=chunk)
        assert segmentation.shape == (5, 56, 56)
        assert (segmentation == expected).mean() > 0.999  # ties within float rounding may fall either way
