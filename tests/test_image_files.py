"""The torch-free square geometry gives the pixels of open_clip's eval transform and the masks of
torchvision's nearest resize and centre crop, so that figure jobs show what the maps saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_dataset
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from cliplens.image_files import SQUARE_MODES, load_class_mask, load_rgb, square_image, square_images, square_mask, square_masks
from cliplens.images import square_transform

SIZES = [(224, 224), (640, 480), (480, 640), (333, 500), (500, 333), (97, 1021), (225, 224), (100, 100), (1411, 940)]
"""(width, height): square, landscape, portrait, odd ratios, one pixel off square, smaller than the maps."""


def _photo(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 7919 + height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _open_clip_pixels(image: Image.Image, size: int, resize_mode: str) -> np.ndarray:
    return square_transform(size, resize_mode)(image).numpy()


@pytest.mark.parametrize("resize_mode", SQUARE_MODES)
@pytest.mark.parametrize("width, height", SIZES)
def test_square_images_are_open_clips_pixels(resize_mode: str, width: int, height: int) -> None:
    image = _photo(width, height)
    np.testing.assert_array_equal(np.asarray(square_image(image, 224, resize_mode)), _open_clip_pixels(image, 224, resize_mode))


@pytest.mark.parametrize("resize_mode", SQUARE_MODES)
def test_square_images_of_the_demo_photos_are_open_clips_pixels(resize_mode: str) -> None:
    paths = sorted(shared_dataset("clip-demo-images").glob("*.*"))
    assert paths
    expected = np.stack([_open_clip_pixels(load_rgb(path), 224, resize_mode) for path in paths])
    np.testing.assert_array_equal(square_images(paths, 224, resize_mode), expected)


def _torchvision_mask(mask: np.ndarray, size: int, resize_mode: str) -> np.ndarray:
    """The reference: torchvision's tensor resize (nearest) and centre crop, as the maps' masks were made."""
    tensor = torch.from_numpy(mask.astype(np.int64))[None]
    if resize_mode == "squash":
        return TF.resize(tensor, [size, size], interpolation=TF.InterpolationMode.NEAREST)[0].numpy()
    return TF.center_crop(TF.resize(tensor, size, interpolation=TF.InterpolationMode.NEAREST), [size, size])[0].numpy()


@pytest.mark.parametrize("resize_mode", SQUARE_MODES)
@pytest.mark.parametrize("width, height", SIZES + [(112, 112), (448, 224), (7, 300)])
def test_square_masks_are_torchvisions_nearest_resize_and_crop(resize_mode: str, width: int, height: int) -> None:
    mask = np.random.default_rng(width + height).integers(0, 90, (height, width))
    np.testing.assert_array_equal(square_mask(mask, 224, resize_mode), _torchvision_mask(mask, 224, resize_mode))


def test_square_masks_of_coco_are_torchvisions(tmp_path: Path) -> None:
    paths = sorted((shared_dataset("coco128") / "semantic_segmentation" / "masks").rglob("*.png"))[:12]
    assert paths
    for resize_mode in SQUARE_MODES:
        expected = np.stack([_torchvision_mask(load_class_mask(path), 224, resize_mode) for path in paths])
        np.testing.assert_array_equal(square_masks(paths, (224, 224), resize_mode), expected)


def test_other_geometries_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'longest'.*squash.*shortest"):
        square_image(_photo(30, 20), 16, "longest")
