"""Image and mask files without torch: decoding to 8-bit RGB, class masks, and the square geometry of
the explanation maps, for jobs that draw stored maps and never build a model (Pillow and numpy only).

The square geometry is open_clip's eval geometry of the two square modes the maps use, as
torchvision applies it to Pillow images (the same pixels, tested against
:func:`cliplens.images.square_transform`): 'squash' resizes to ``size x size`` (bicubic); 'shortest'
resizes the short side to ``size`` (the long side truncated to an integer) and centre crops.
Masks take the same geometry with nearest-neighbour sampling, the sample torch's ``nearest``
interpolation takes (source index ``floor(i * in / out)`` in float32).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

SQUARE_MODES = ("squash", "shortest")

HIGH_BIT_DEPTH_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
"""Single-channel modes Pillow opens 16-bit and float images in, and the value that is full white:
16-bit PNGs and TIFFs open as ``I;16*`` or ``I`` (0..65535), float TIFFs as ``F`` (taken as 0..1)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image``. Pillow's ``convert("RGB")`` clips 16-bit and float images to
    0..255, turning a 16-bit photo white; those are scaled by their full range instead."""
    white = HIGH_BIT_DEPTH_MODES.get(image.mode)
    if white is None:
        return image.convert("RGB")
    values = np.asarray(image, dtype=np.float64) * (255.0 / white)
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8)).convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file as 8-bit RGB (see :func:`to_rgb`)."""
    with Image.open(path) as image:
        return to_rgb(image)


def load_class_mask(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Class-index mask ``[H, W]`` (int64), resized nearest-neighbour to ``size = (H, W)`` if given."""
    image: Image.Image
    with Image.open(path) as image:
        if size is not None:
            image = image.resize((size[1], size[0]), resample=Image.Resampling.NEAREST)
        return np.asarray(image, dtype=np.int64)


def _resized_size(width: int, height: int, size: int, resize_mode: str) -> tuple[int, int]:
    """(width, height) before the centre crop: ``size`` square, or the short side at ``size``."""
    if resize_mode not in SQUARE_MODES:
        raise ValueError(f"resize_mode {resize_mode!r} is not a square geometry; choose one of {SQUARE_MODES}")
    if resize_mode == "squash":
        return size, size
    return (size, int(size * height / width)) if width <= height else (int(size * width / height), size)


def _crop_offset(length: int, size: int) -> int:
    """Start of a centred crop of ``size`` from ``length`` (torchvision's rounding)."""
    return int(round((length - size) / 2.0))


def square_image(image: Image.Image, size: int, resize_mode: str) -> Image.Image:
    """``image`` in the maps' square geometry (bicubic resize, then centre crop; see the module)."""
    width, height = _resized_size(*image.size, size, resize_mode)
    resized = image.resize((width, height), Image.Resampling.BICUBIC) if (width, height) != image.size else image
    left, top = _crop_offset(width, size), _crop_offset(height, size)
    return resized.crop((left, top, left + size, top + size))


def square_images(paths: Sequence[str | os.PathLike], size: int, resize_mode: str) -> np.ndarray:
    """``[n, size, size, 3]`` uint8 pixels of image files in the maps' square geometry."""
    if not paths:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([np.asarray(square_image(load_rgb(path), size, resize_mode)) for path in paths])


def _nearest_rows(length: int, target: int) -> np.ndarray:
    """Source indices of torch's ``nearest`` resampling from ``length`` to ``target`` samples."""
    scale = np.float32(length / target)
    return np.minimum(np.floor(np.arange(target, dtype=np.float32) * scale).astype(np.int64), length - 1)


def square_mask(mask: np.ndarray, size: int, resize_mode: str) -> np.ndarray:
    """A class-index mask ``[H, W]`` in the square geometry of its image (nearest-neighbour)."""
    height, width = mask.shape
    new_width, new_height = _resized_size(width, height, size, resize_mode)
    top, left = _crop_offset(new_height, size), _crop_offset(new_width, size)
    rows = _nearest_rows(height, new_height)[top : top + size]
    columns = _nearest_rows(width, new_width)[left : left + size]
    return mask[np.ix_(rows, columns)]


def square_masks(paths: Sequence[str | os.PathLike], size: tuple[int, int], resize_mode: str) -> np.ndarray:
    """Class-index masks ``[N, H, W]`` (int64) of mask files in the square geometry of their images."""
    if size[0] != size[1]:
        raise ValueError(f"the maps' geometry is square; got {size}")
    return np.stack([square_mask(load_class_mask(path), size[0], resize_mode) for path in paths])
