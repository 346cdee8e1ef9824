"""The CLIP Surgery job layer: stored scores render to the library's maps; mask evaluation; deletion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from cliplens.explain.methods import explanation_scores
from cliplens.explain.surgery import explain
from cliplens.images import pixels_of, square_transform
from cliplens.maps import get_method
from cliplens.stored_maps import ExplanationScores, mask_evaluation
from cliplens.text import label_features

CFG = {
    "methods": ["raw", "surgery", "gradcam"],
    "surgery_depth": 2,
    "resnet_surgery": "reference",
    "image_size": 224,
    "resize_mode": "squash",
    "templates": "single",
}


def _rows(tmp_path, count=3):
    import skimage.data

    paths = []
    for name in ("astronaut", "chelsea", "coffee")[:count]:
        path = tmp_path / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).save(path)
        paths.append(str(path))
    return pd.DataFrame(
        {"image_id": [p.split("/")[-1][:-4] for p in paths], "path": paths, "mask_path": None, "label_index": [0, 1, 2]}
    )


def test_stored_scores_render_to_the_library_maps(tmp_path, tiny_loaded):
    rows = _rows(tmp_path)
    labels = ["astronaut", "cat", "coffee"]
    stored = explanation_scores(tiny_loaded, rows, labels, CFG, batch_size=2)
    stored.save(tmp_path / "maps.npz", random_weights=True)
    loaded_back = ExplanationScores.load(tmp_path / "maps.npz")
    assert loaded_back.image_ids == rows["image_id"].tolist() and loaded_back.labels == labels
    # each method's segmentation rule travels with its scores: readers need no method registry
    assert loaded_back.normalised == {method: get_method(method).normalised for method in CFG["methods"]} == stored.normalised
    transform = square_transform(224, "squash")
    pixels = pixels_of([Image.open(p).convert("RGB") for p in rows["path"]], transform)
    images = TF.normalize(pixels, tiny_loaded.mean, tiny_loaded.std)
    text, _ = label_features(tiny_loaded, labels, "single")
    for method in ("raw", "surgery"):
        expected = explain(tiny_loaded.model, images, text, method=method, depth=2)
        pairs = loaded_back.pair_maps(method, [0, 1, 2, 2], [0, 1, 2, 0])
        # stored as float16 at patch level: rendering differs from float32 by float16 rounding only
        torch.testing.assert_close(torch.from_numpy(pairs), expected[[0, 1, 2, 2], [0, 1, 2, 0]], atol=5e-3, rtol=0)
    assert loaded_back.scores["gradcam"].shape == (3, 3, 7, 7)
    segmentation = loaded_back.segmentation("surgery", chunk=2)
    assert segmentation.shape == (3, 224, 224) and segmentation.max() < 3


def test_maps_written_without_segmentation_rules_are_refused_with_the_cure(tmp_path):
    scores = np.zeros((1, 2, 2, 2), np.float16)
    np.savez(tmp_path / "old.npz", image_ids=["a"], labels=["x", "y"], image_hw=[4, 4], text=np.eye(2), scores_surgery=scores)
    with pytest.raises(ValueError, match=r"no normalised flag for \['surgery'\].*rerun the job"):
        ExplanationScores.load(tmp_path / "old.npz")


def test_mask_evaluation_scores_a_perfect_map_perfectly(tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[:32] = 7  # class id 7 on the top half, 0 (unlabelled) elsewhere
    mask[32:, :32] = 9
    Image.fromarray(mask).save(tmp_path / "m.png")
    grid = np.zeros((1, 2, 2, 2), np.float32)
    grid[0, 0, 0, :] = 1  # label 0 (id 7): top row of the 2x2 grid
    grid[0, 1, 1, 0] = 1  # label 1 (id 9): bottom-left cell
    explanations = ExplanationScores(
        ["img"], ["seven", "nine"], (64, 64), {"surgery": grid}, np.eye(2, dtype=np.float32), {"surgery": True}
    )
    rows = pd.DataFrame({"image_id": ["img"], "mask_path": [str(tmp_path / "m.png")]})
    per_map, segmentation = mask_evaluation(explanations, rows, [7, 9], "squash")
    assert sorted(per_map["label"]) == ["nine", "seven"]
    assert (per_map["pointing_hit"] == 1).all()
    assert per_map["average_precision"].min() > 0.9  # the 2 x 2 grid is rendered smooth: edges blur
    assert segmentation.loc[0, "miou"] > 0.5
    # a map at the mask's own resolution that equals it is scored exactly 1 by every metric
    exact = np.stack([mask == 7, mask == 9]).astype(np.float32)[None]
    explanations = ExplanationScores(
        ["img"], ["seven", "nine"], (64, 64), {"surgery": exact}, np.eye(2, dtype=np.float32), {"surgery": True}
    )
    per_map, segmentation = mask_evaluation(explanations, rows, [7, 9], "squash")
    metrics = ["iou", "pixel_accuracy", "average_precision", "pointing_hit", "energy_in_mask"]
    assert (per_map[metrics] == 1.0).all().all() and (segmentation[["miou", "pixel_accuracy"]] == 1.0).all().all()
