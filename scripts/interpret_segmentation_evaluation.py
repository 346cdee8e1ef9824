"""Evaluate the decomposition's zero-shot segmentation on the masks, as the surgery maps are (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.explain import mask_evaluation, write_evaluation
from cliplens.interpretation_job import DecompositionScores
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    params, outputs, model = snakemake.params, snakemake.output, snakemake.wildcards.model
    manifest = read_manifest(snakemake.input.manifest)
    if not manifest.attrs.get("mask_ids"):
        raise ValueError("the dataset has no masks to evaluate the segmentation against")
    scores = DecompositionScores.load(snakemake.input.maps)
    per_map, segmentation = mask_evaluation(scores, manifest, manifest.attrs["mask_ids"], params.resize_mode)
    summary = write_evaluation(per_map, segmentation, model, outputs, params.n_boot, params.random_weights)
    log.info("evaluated %d maps\n%s\n%s", len(per_map), summary.to_string(), segmentation.to_string())
