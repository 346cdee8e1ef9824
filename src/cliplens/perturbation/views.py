"""Perturbed views for figures: images under grid cells as the embedding step perturbs them, decoded
with Pillow (:mod:`cliplens.image_files`) so that a figure job builds no model and imports no
open_clip; torch and torchvision perturb (the families themselves)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from cliplens.image_files import load_class_mask, load_rgb, square_image, square_mask
from cliplens.perturbation.grid import PerturbationSpec, apply_spec, family_inputs, needs_mask
from cliplens.pixels import uint8_images

log = logging.getLogger(__name__)

VIEW_GEOMETRY = "shortest"
"""open_clip's default eval geometry (short side resized, centre crop), the one the embedding step
decodes in for a model without its own ``resize_mode``."""


def decode_views(rows: pd.DataFrame, size: int, masks: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The readable images of ``rows`` at ``size`` (square geometry :data:`VIEW_GEOMETRY`): their ids,
    ``[n, size, size, 3]`` uint8 pixels and ``[n, size, size]`` object masks (mask != 0; all False
    without ``masks`` or a mask file). An unreadable file is logged and skipped."""
    ids, pixels, objects = [], [], []
    mask_paths = rows["mask_path"] if masks else [None] * len(rows)
    for image_id, path, mask_path in zip(rows["image_id"], rows["path"], mask_paths):
        try:
            image = np.asarray(square_image(load_rgb(path), size, VIEW_GEOMETRY))
            labels = load_class_mask(mask_path) if pd.notna(mask_path) else np.zeros((size, size), np.int64)
        except Exception as error:  # a corrupt file must not stop the figures
            log.warning("skipping unreadable image %s: %s: %s", path, type(error).__name__, error)
            continue
        ids.append(str(image_id))
        pixels.append(image)
        objects.append(square_mask(labels, size, VIEW_GEOMETRY) != 0)
    if not ids:
        return [], np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), bool)
    return ids, np.stack(pixels), np.stack(objects)


def perturbed_views(
    rows: pd.DataFrame,
    specs: Mapping[str, Sequence[PerturbationSpec]],
    size: int = 224,
    backend: str = "torch",
    shown: Mapping[str, Collection[str]] | None = None,
) -> Iterator[tuple[str, dict[tuple[str, int], np.ndarray]]]:
    """HxWx3 uint8 views of images under grid cells, for figures: ``(family, {(image_id, severity):
    view})`` for each family of ``specs`` (family -> its cells) in turn, severity 0 the clean view.

    The images of ``rows`` are decoded once, as the embedding step sees them at ``size``; each
    family gets the input the embedding step gives it (8-bit bytes or [0, 1] floats) and perturbs
    its ``shown`` image ids only (default: all), batched. One family's views are made at a time, so
    a caller that draws them before asking for the next holds one family in memory.
    """
    needs_masks = any(needs_mask(family) for family in specs)
    ids, clean, objects = decode_views(rows, size, needs_masks)
    input_of = family_inputs(torch.from_numpy(clean).permute(0, 3, 1, 2), backend)
    for family, cells in specs.items():
        keep = [i for i, image_id in enumerate(ids) if shown is None or image_id in shown[family]]
        views: dict[tuple[str, int], np.ndarray] = {}
        if keep:
            kept_ids, index = [ids[i] for i in keep], torch.tensor(keep)
            views.update({(image_id, 0): clean[i] for i, image_id in zip(keep, kept_ids)})
            pixels = input_of(family)[index]
            family_masks = torch.from_numpy(objects[keep]) if needs_mask(family) else None
            for spec in cells:
                perturbed = uint8_images(apply_spec(pixels, kept_ids, spec, family_masks, backend))
                views.update({(image_id, spec.severity): view for image_id, view in zip(kept_ids, perturbed)})
        yield family, views
