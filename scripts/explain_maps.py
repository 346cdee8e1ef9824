"""Explanation maps (raw CLIP, CLIP Surgery, Grad-CAM) of a dataset's images x labels (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.explain.methods import explanation_scores
from cliplens.maps import evaluation_rows
from cliplens.models import load_model
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    params, resources = snakemake.params, snakemake.resources
    loaded = load_model(params.model, resources.device)
    manifest = read_manifest(snakemake.input.manifest)
    rows = evaluation_rows(manifest, params.explain["max_images"])
    explanations = explanation_scores(
        loaded, rows, manifest.attrs["label_names"], params.explain, resources.batch_size, resources.num_workers
    )
    explanations.save(snakemake.output[0], loaded.is_random)
    log.info(
        "maps of %d images x %d labels for %s", len(explanations.image_ids), len(explanations.labels), list(explanations.scores)
    )
