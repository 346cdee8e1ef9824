"""Images: decoding and open_clip's geometry as pixel batches, masks, and arrays for plotting.

Images are decoded and resized/cropped by open_clip's own eval transform (without its final
ToTensor and Normalize) in DataLoader workers and travel as 8-bit pixels; conversion to [0, 1]
floats and normalisation then run batched on the model's device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from open_clip.transform import MaybeToTensor, PreprocessCfg, image_transform_v2
from PIL import Image
from torchvision.transforms import Compose, Normalize, ToTensor

from cliplens.image_files import load_rgb, square_mask
from cliplens.models import LoadedModel
from cliplens.pixels import unit_pixels

log = logging.getLogger(__name__)


def pixel_transform(loaded: LoadedModel) -> Callable[[Image.Image], torch.Tensor]:
    """open_clip's eval preprocessing of a model up to its 8-bit pixels (see :func:`preprocess_without_normalize`)."""
    return preprocess_without_normalize(loaded.provenance["preprocess"])


def preprocess_without_normalize(preprocess: Mapping[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """open_clip's eval transform for a preprocess config (size, resize_mode, ...) up to 8-bit pixels:
    its resizing and cropping, then the image's bytes as an [H, W, 3] uint8 tensor. Conversion to
    [0, 1] floats (:func:`cliplens.pixels.unit_pixels`, what its ``ToTensor`` computes) and
    normalisation happen batched on the device (:func:`iterate_batches`, the model)."""
    steps = image_transform_v2(PreprocessCfg(**preprocess), is_train=False).transforms
    return Compose([*(step for step in steps if not isinstance(step, (Normalize, ToTensor, MaybeToTensor))), hwc_bytes])


def hwc_bytes(image: Image.Image) -> torch.Tensor:
    """An 8-bit RGB image's pixels as an [H, W, 3] uint8 tensor, laid out as Pillow holds them."""
    return torch.from_numpy(np.array(image, dtype=np.uint8))


def pixels_of(images: Sequence[Image.Image], transform: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    """[0, 1] float pixels [n, 3, S, S] of Pillow images through a transform of this module."""
    return unit_pixels(torch.stack([transform(image) for image in images]).permute(0, 3, 1, 2))


class ManifestImages(torch.utils.data.Dataset):
    """Manifest rows as [H, W, 3] uint8 tensors (``transform``); unreadable files yield ok=False instead of raising."""

    def __init__(self, rows: pd.DataFrame, transform: Callable[[Image.Image], torch.Tensor], size: int, masks: bool = False):
        self.paths = rows["path"].tolist()
        self.mask_paths = rows["mask_path"].tolist() if masks else [None] * len(rows)
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor, bool, str]:
        try:
            pixels = self.transform(load_rgb(self.paths[index]))
            mask = self._mask(index)
            return index, pixels, mask, True, ""
        except Exception as error:  # a corrupt file must not stop the run
            empty = torch.zeros(self.size, self.size, 3, dtype=torch.uint8)
            return index, empty, torch.zeros(self.size, self.size, dtype=torch.bool), False, f"{type(error).__name__}: {error}"

    def _mask(self, index: int) -> torch.Tensor:
        path = self.mask_paths[index]
        if path is None:
            return torch.zeros(self.size, self.size, dtype=torch.bool)
        with Image.open(path) as mask:
            labels = np.asarray(mask)
        # same geometry as the image: resize the short side, centre crop; nearest keeps class ids
        return torch.from_numpy(square_mask(labels, self.size, "shortest") != 0)


def iterate_batches(
    rows: pd.DataFrame,
    transform: Callable,
    size: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    masks: bool = False,
    eight_bit: bool = False,
) -> Iterator[tuple[pd.DataFrame, torch.Tensor, torch.Tensor]]:
    """Yield (rows, pixels [B,3,S,S] on device, masks [B,S,S] on device) of readable images; log the rest.

    Batches travel as bytes (a quarter of the float32 traffic from the workers and to a GPU); the
    pixels are [0, 1] float32, converted on the device, or with ``eight_bit`` the uint8 bytes
    themselves (channels-last memory, as decoded)."""
    loader = torch.utils.data.DataLoader(
        ManifestImages(rows, transform, size, masks),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    for index, pixels, mask, ok, errors in loader:
        for i, error in zip(index[~ok].tolist(), [e for e, good in zip(errors, ok) if not good]):
            log.warning("skipping unreadable image %s: %s", rows.iloc[i]["path"], error)
        keep = ok.nonzero().squeeze(1)
        if len(keep) == 0:
            continue
        if len(keep) < len(ok):  # a selection is a new tensor, no longer in pinned memory: only when needed
            pixels, mask = pixels[keep], mask[keep]
        data = pixels.permute(0, 3, 1, 2).to(device, non_blocking=True)
        yield rows.iloc[index[keep].numpy()], data if eight_bit else unit_pixels(data), mask.to(device, non_blocking=True)


def load_pixels(
    loaded: LoadedModel, manifest: pd.DataFrame, ids: Sequence[str], transform: Callable | None = None, size: int | None = None
) -> torch.Tensor:
    """[0,1] pixels [n, 3, S, S] of the images ``ids`` (in that order) on the model's device, in one batch;
    ``transform`` and ``size`` default to the model's own preprocessing."""
    rows = manifest.set_index("image_id").loc[list(ids)].reset_index()
    transform, size = transform or pixel_transform(loaded), size or loaded.image_size
    batches = iterate_batches(rows, transform, size, max(len(rows), 1), 0, loaded.device)
    return torch.cat([pixels for _, pixels, _ in batches])


def square_transform(image_size: int, resize_mode: str):
    """Square input of ``image_size``: 'squash' (the paper, no centre crop) or 'shortest' (centre crop)."""
    return preprocess_without_normalize({"size": image_size, "resize_mode": resize_mode})


def as_images(pixels: torch.Tensor) -> np.ndarray:
    """[n, S, S, 3] float images of [0,1] pixels [n, 3, S, S], for plotting."""
    return pixels.permute(0, 2, 3, 1).float().cpu().numpy()
