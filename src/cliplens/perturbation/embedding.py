"""Batched extraction of perturbed image embeddings into the Parquet store, and perturbed views.

Perturbation and normalisation run batched on the model's device, so one decoded batch serves
every perturbation of a family.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from cliplens.images import (
    iterate_batches,
    pixel_transform,
    preprocess_without_normalize,
)
from cliplens.io import EmbeddingWriter
from cliplens.models import LoadedModel, encode_pixels
from cliplens.perturbation.grid import PerturbationSpec, apply_spec, needs_mask, reads_bytes
from cliplens.pixels import uint8_images, unit_pixels

log = logging.getLogger(__name__)


def family_inputs(eight_bit: torch.Tensor, backend: str = "torch") -> Callable[[str], torch.Tensor]:
    """The input each family gets from a decoded batch (8-bit ``[B, 3, H, W]``): the bytes themselves
    for families that read bytes (JPEG), else [0, 1] floats, converted once, when first asked for."""
    floats = functools.cache(functools.partial(unit_pixels, eight_bit))
    return lambda family: eight_bit if reads_bytes(family, backend) else floats()


def extract_image_embeddings(
    loaded: LoadedModel,
    rows: pd.DataFrame,
    specs: Sequence[PerturbationSpec],
    writer: EmbeddingWriter,
    batch_size: int = 32,
    num_workers: int = 0,
    backend: str = "torch",
) -> int:
    """Embed every readable image of ``rows`` under every perturbation spec; returns rows written.

    Each family gets the input of :func:`family_inputs`."""
    needs_masks = any(needs_mask(spec.family) for spec in specs)
    transform = pixel_transform(loaded)
    done = 0
    for batch, eight_bit, masks in iterate_batches(
        rows, transform, loaded.image_size, batch_size, num_workers, loaded.device, needs_masks, eight_bit=True
    ):
        ids = batch["image_id"].tolist()
        input_of = family_inputs(eight_bit, backend)
        for spec in specs:
            perturbed = apply_spec(input_of(spec.family), ids, spec, masks if needs_masks else None, backend)
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
    rows: pd.DataFrame,
    specs: Mapping[str, Sequence[PerturbationSpec]],
    size: int = 224,
    backend: str = "torch",
    shown: Mapping[str, Collection[str]] | None = None,
) -> dict[str, dict[tuple[str, int], np.ndarray]]:
    """HxWx3 uint8 views of images under grid cells, for figures: ``{family: {(image_id, severity):
    view}}`` for the families of ``specs`` (family -> its cells), severity 0 the clean view.

    The images of ``rows`` are decoded once, as the embedding step sees them at ``size``; each
    family perturbs its ``shown`` image ids only (default: all), batched.
    """
    transform = preprocess_without_normalize({"size": size})
    needs_masks = any(needs_mask(family) for family in specs)
    views: dict[str, dict[tuple[str, int], np.ndarray]] = {family: {} for family in specs}
    for batch, eight_bit, masks in iterate_batches(
        rows, transform, size, len(rows) or 1, 0, torch.device("cpu"), needs_masks, eight_bit=True
    ):
        ids = batch["image_id"].tolist()
        clean, input_of = uint8_images(eight_bit), family_inputs(eight_bit, backend)
        for family, cells in specs.items():
            keep = [i for i, image_id in enumerate(ids) if shown is None or image_id in shown[family]]
            if not keep:
                continue
            kept_ids, index = [ids[i] for i in keep], torch.tensor(keep)
            views[family].update({(image_id, 0): clean[i] for i, image_id in zip(keep, kept_ids)})
            pixels, family_masks = input_of(family)[index], masks[index] if needs_mask(family) else None
            for spec in cells:
                perturbed = uint8_images(apply_spec(pixels, kept_ids, spec, family_masks, backend))
                views[family].update({(image_id, spec.severity): view for image_id, view in zip(kept_ids, perturbed)})
    return views
