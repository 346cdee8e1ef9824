"""Decompose a dataset's first images into per-layer, per-head contributions (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.interpret.contributions import decompose_dataset
from cliplens.models import load_model
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    params, resources = snakemake.params, snakemake.resources
    store = decompose_dataset(
        load_model(params.model, resources.device),
        read_manifest(snakemake.input.manifest),
        snakemake.output[0],
        params.max_images,
        params.head_layers,
        params.dtype,
        resources.batch_size,
        resources.num_workers,
        params.constant_split,
    )
    log.info("decomposed %d images: %s", len(store), store.meta)
