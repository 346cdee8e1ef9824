"""Batched extraction of image and text embeddings into the Parquet store.

Images are decoded and resized/cropped by open_clip's own eval transform (without its final
Normalize) in DataLoader workers; perturbation and normalisation then run batched on the
model's device, so one decoded batch serves every perturbation of a family.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from torchvision.transforms import Compose, Normalize, v2
from torchvision.transforms.v2 import functional as TF

from cliplens.grid import PerturbationSpec, apply_spec, needs_mask
from cliplens.models import LoadedModel, inference_mode
from cliplens.store import EmbeddingWriter

log = logging.getLogger(__name__)


def pixel_transform(loaded: LoadedModel) -> Callable[[Image.Image], torch.Tensor]:
    """open_clip's eval preprocessing of a model up to a [0,1] float tensor (normalisation happens on device)."""
    return preprocess_without_normalize(loaded.provenance["preprocess"])


def preprocess_without_normalize(preprocess: Mapping[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """open_clip's eval transform for a preprocess config (size, resize_mode, ...), minus Normalize."""
    steps = image_transform_v2(PreprocessCfg(**preprocess), is_train=False).transforms
    return Compose([step for step in steps if not isinstance(step, Normalize)])


class ManifestImages(torch.utils.data.Dataset):
    """Manifest rows as [0,1] pixel tensors; unreadable files yield ok=False instead of raising."""

    def __init__(self, rows: pd.DataFrame, transform: Callable[[Image.Image], torch.Tensor], size: int, masks: bool = False):
        self.paths = rows["path"].tolist()
        self.mask_paths = rows["mask_path"].tolist() if masks else [None] * len(rows)
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor, bool, str]:
        try:
            with Image.open(self.paths[index]) as image:
                pixels = self.transform(image.convert("RGB"))
            mask = self._mask(index)
            return index, pixels, mask, True, ""
        except Exception as error:  # a corrupt file must not stop the run
            empty = torch.zeros(3, self.size, self.size)
            return index, empty, torch.zeros(self.size, self.size, dtype=torch.bool), False, f"{type(error).__name__}: {error}"

    def _mask(self, index: int) -> torch.Tensor:
        path = self.mask_paths[index]
        if path is None:
            return torch.zeros(self.size, self.size, dtype=torch.bool)
        with Image.open(path) as mask:
            labels = torch.from_numpy(np.asarray(mask).copy())[None]
        # same geometry as the image: resize the short side, centre crop; nearest keeps class ids
        labels = TF.resize(labels, self.size, interpolation=v2.InterpolationMode.NEAREST)
        return TF.center_crop(labels, self.size)[0] != 0


def iterate_batches(
    rows: pd.DataFrame, transform: Callable, size: int, batch_size: int, num_workers: int, device: torch.device, masks: bool = False
) -> Iterator[tuple[pd.DataFrame, torch.Tensor, torch.Tensor]]:
    """Yield (rows, pixels [B,3,S,S] on device, masks [B,S,S] on device) of readable images; log the rest."""
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
        yield (
            rows.iloc[index[keep].numpy()],
            pixels[keep].to(device, non_blocking=True),
            mask[keep].to(device, non_blocking=True),
        )


def encode_pixels(loaded: LoadedModel, pixels: torch.Tensor) -> torch.Tensor:
    """L2-normalised image embeddings (float32) of [0,1] pixels, normalised with the model's mean/std."""
    with inference_mode(loaded):
        features = loaded.model.encode_image(TF.normalize(pixels, loaded.mean, loaded.std))
    return F.normalize(features.float(), dim=-1)


def extract_image_embeddings(
    loaded: LoadedModel,
    rows: pd.DataFrame,
    specs: Sequence[PerturbationSpec],
    writer: EmbeddingWriter,
    batch_size: int = 32,
    num_workers: int = 0,
    backend: str = "torch",
) -> int:
    """Embed every readable image of ``rows`` under every perturbation spec; returns rows written."""
    needs_masks = any(needs_mask(spec.family) for spec in specs)
    transform = pixel_transform(loaded)
    done = 0
    for batch, pixels, masks in iterate_batches(
        rows, transform, loaded.image_size, batch_size, num_workers, loaded.device, needs_masks
    ):
        ids = batch["image_id"].tolist()
        for spec in specs:
            perturbed = apply_spec(pixels, ids, spec, masks if needs_masks else None, backend)
            embeddings = encode_pixels(loaded, perturbed).cpu().numpy()
            writer.write(
                {
                    "image_id": ids,
                    "label_index": batch["label_index"].tolist(),
                    "family": [spec.family] * len(ids),
                    "severity": [spec.severity] * len(ids),
                    "seed": [spec.seed] * len(ids),
                },
                embeddings,
            )
        done += len(ids)
        log.info("embedded %d/%d images x %d perturbations", done, len(rows), len(specs))
    return writer.rows_written


def perturbed_views(
    rows: pd.DataFrame, specs: Sequence[PerturbationSpec], size: int = 224, backend: str = "torch"
) -> dict[tuple[str, int], np.ndarray]:
    """HxWx3 uint8 views of images under each grid cell, keyed (image_id, severity); for figures."""
    transform = preprocess_without_normalize({"size": size})
    needs_masks = any(needs_mask(spec.family) for spec in specs)
    views = {}
    for batch, pixels, masks in iterate_batches(rows, transform, size, len(rows) or 1, 0, torch.device("cpu"), needs_masks):
        ids = batch["image_id"].tolist()
        for spec in specs:
            perturbed = apply_spec(pixels, ids, spec, masks if needs_masks else None, backend)
            arrays = (perturbed.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            views.update({(image_id, spec.severity): array for image_id, array in zip(ids, arrays)})
    return views


def load_pixels(
    loaded: LoadedModel, manifest: pd.DataFrame, ids: Sequence[str], transform: Callable | None = None, size: int | None = None
) -> torch.Tensor:
    """[0,1] pixels [n, 3, S, S] of the images ``ids`` (in that order) on the model's device, in one batch;
    ``transform`` and ``size`` default to the model's own preprocessing."""
    rows = manifest.set_index("image_id").loc[list(ids)].reset_index()
    transform, size = transform or pixel_transform(loaded), size or loaded.image_size
    batches = iterate_batches(rows, transform, size, max(len(rows), 1), 0, loaded.device)
    return torch.cat([pixels for _, pixels, _ in batches])
