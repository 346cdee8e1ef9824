"""Batched extraction of perturbed image embeddings into the Parquet store.

Perturbation and normalisation run batched on the model's device, so one decoded batch serves
every perturbation of a family.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from cliplens.images import iterate_batches, pixel_transform
from cliplens.io import EmbeddingWriter
from cliplens.models import LoadedModel, encode_pixels
from cliplens.perturbation.grid import PerturbationSpec, apply_spec, family_inputs, needs_mask

log = logging.getLogger(__name__)


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
