"""The planted-concept world: determinism, exact masks, the spurious cue per split, captions, files."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from cliplens.planted import BACKGROUNDS, PlantedConfig, generate_image, generate_split, write_split

COUNTS = {"train": 2000, "test": 600, "test_shifted": 600}


@pytest.fixture(scope="module")
def cfg() -> PlantedConfig:
    return PlantedConfig(counts=COUNTS, backgrounds=tuple(BACKGROUNDS))


@pytest.fixture(scope="module")
def splits(cfg):
    return {split: generate_split(cfg, split) for split in COUNTS}


def test_images_depend_only_on_seed_split_and_index(cfg, splits):
    images, masks, records = splits["test"]
    other_counts = PlantedConfig(counts={"train": 3, "test": 50, "test_shifted": 0}, backgrounds=cfg.backgrounds)
    again, again_masks, again_records = generate_split(other_counts, "test")
    np.testing.assert_array_equal(again, images[:50])
    np.testing.assert_array_equal(again_masks, masks[:50])
    assert again_records.equals(records.iloc[:50])
    image, mask, record = generate_image(cfg, "test", 7)
    np.testing.assert_array_equal(image, images[7])
    assert record == records.iloc[7].to_dict()
    reseeded = PlantedConfig(counts=COUNTS, backgrounds=cfg.backgrounds, seed=1)
    assert not np.array_equal(generate_image(reseeded, "test", 7)[0], image)
    assert not np.array_equal(splits["train"][0][7], image)  # splits draw from different streams


def test_every_mask_pixel_shows_its_objects_colour_and_background_shows_none(cfg, splits):
    palette = np.array(list(cfg.colours.values()))
    for images, masks, records in splits.values():
        for image, mask, objects in zip(images, masks, records["objects"].map(json.loads)):
            assert set(np.unique(mask)) <= {0} | {o["mask_value"] for o in objects}
            for obj in objects:
                assert (image[mask == obj["mask_value"]] == obj["rgb"]).all()
            background = image[mask == 0].astype(int)
            distance = np.abs(background[:, None, :] - palette[None]).max(-1).min(-1)
            assert distance.min() > 30  # a grey far from every object colour
    assert (splits["train"][2]["num_objects"] == 2).mean() > 0.15


def test_mask_areas_follow_object_sizes(splits):
    _, masks, records = splits["train"]
    areas = defaultdict(list)
    for mask, objects in zip(masks, records["objects"].map(json.loads)):
        for o in objects:
            area = int((mask == o["mask_value"]).sum())
            assert 0 < area <= np.pi * (o["radius"] + 1) ** 2
            areas[o["shape"], o["size"]].append(area)
    for shape in {shape for shape, _ in areas}:
        assert np.median(areas[shape, "large"]) > 2.5 * np.median(areas[shape, "small"])


def test_train_background_follows_shape_with_the_configured_correlation(cfg, splits):
    def preferred_share(records, world=cfg):
        return float((records["background"] == records["shape"].map(world.preferred_background)).mean())

    assert abs(preferred_share(splits["train"][2]) - cfg.correlation) < 0.05
    assert abs(preferred_share(splits["test"][2]) - 1 / len(cfg.backgrounds)) < 0.05
    assert preferred_share(splits["test_shifted"][2]) == 0.0  # the cue is reversed
    shares = splits["test"][2]["background"].value_counts(normalize=True)
    assert set(shares.index) == set(cfg.backgrounds) and (abs(shares - 1 / len(shares)) < 0.06).all()
    weak = PlantedConfig(counts=COUNTS, correlation=0.4)
    assert abs(preferred_share(generate_split(weak, "train")[2], weak) - 0.4) < 0.05


def test_captions_name_every_object_then_the_background(splits):
    for records in (split[2] for split in splits.values()):
        for _, row in records.iterrows():
            objects = json.loads(row["objects"])
            phrases = [f"a {o['size']} {o['colour']} {o['shape']} at the {o['position']}" for o in objects]
            assert row["caption"] == " and ".join(phrases) + f" on {row['background']}"
            first = objects[0]
            assert (row["label"], row["colour"], row["size"], row["position"]) == (
                first["shape"],
                first["colour"],
                first["size"],
                first["position"],
            )


def test_a_second_object_stands_at_least_half_the_image_away(cfg, splits):
    for objs in splits["train"][2]["objects"].map(json.loads):
        if len(objs) == 2:
            assert np.hypot(*np.subtract(objs[0]["centre"], objs[1]["centre"])) >= (0.5 - 2 * 0.03 * np.sqrt(2)) * cfg.image_size


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"colors": {}}, "key"),
        ({"shapes": ["circle", "hexagon"]}, "shapes"),
        ({"backgrounds": ["noise"]}, "backgrounds"),
        ({"positions": ["left", "top left"]}, "positions"),
        ({"colours": {"red": [300, 0, 0], "blue": [0, 0, 255]}}, "colours"),
        ({"sizes": {"small": 0.15, "huge": 0.9}}, "sizes"),
        ({"counts": {"train": 10, "test": 10}}, "counts"),
        ({"correlation": 1.5}, "correlation"),
        ({"two_object_fraction": -0.1}, "two_object_fraction"),
        ({"max_objects": 3}, "max_objects"),
        ({"image_size": 8}, "image_size"),
    ],
)
def test_invalid_settings_name_the_key_and_valid_values(values, named):
    with pytest.raises(ValueError, match=rf"^{named}: .*valid"):
        PlantedConfig.from_mapping(values)


def test_from_mapping_accepts_plain_yaml_like_values():
    cfg = PlantedConfig.from_mapping(
        {"colours": {"red": [255, 0, 0], "blue": [0, 0, 255]}, "shapes": ["circle", "ring"], "image_size": 48}
    )
    assert cfg.colours == {"red": (255, 0, 0), "blue": (0, 0, 255)} and cfg.shapes == ("circle", "ring")
    image, mask, record = generate_image(cfg, "train", 0)
    assert image.shape == (48, 48, 3) and mask.shape == (48, 48) and record["colour"] in cfg.colours
    with pytest.raises(ValueError, match="^split: "):
        generate_image(cfg, "validation", 0)


def test_write_split_writes_pngs_and_a_manifest(tmp_path):
    cfg = PlantedConfig(counts={"train": 0, "test": 0, "test_shifted": 6})
    manifest = write_split(cfg, "test_shifted", tmp_path)
    images, masks, _ = generate_split(cfg, "test_shifted")
    assert list(manifest.columns[:7]) == ["image_id", "split", "path", "mask_path", "width", "height", "label"]
    assert {"caption", "background", "num_objects", "colour", "shape", "size", "position", "objects"} <= set(manifest.columns)
    assert manifest["image_id"].iloc[4] == "test_shifted-000004"
    for row, image, mask in zip(manifest.itertuples(), images, masks):
        assert row.path == str(tmp_path / "images" / "test_shifted" / f"{row.image_id}.png")
        np.testing.assert_array_equal(np.asarray(Image.open(row.path)), image)
        np.testing.assert_array_equal(np.asarray(Image.open(row.mask_path)), mask)
    assert sorted(p.name for p in (tmp_path / "masks" / "test_shifted").iterdir()) == [
        f"test_shifted-00000{i}.png" for i in range(6)
    ]
