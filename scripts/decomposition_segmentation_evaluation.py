"""Evaluate the decomposition's zero-shot segmentation on the masks, as the surgery maps are (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.io import write_table
from cliplens.plotting import summary_figure
from cliplens.runtime import job_logging
from cliplens.stored_maps import ExplanationScores, evaluation_summary, mask_evaluation

with job_logging(snakemake.log[0], snakemake.threads) as log:
    params, outputs, model = snakemake.params, snakemake.output, snakemake.wildcards.model
    manifest = read_manifest(snakemake.input.manifest)
    if not manifest.attrs.get("mask_ids"):
        raise ValueError("the dataset has no masks to evaluate the segmentation against")
    scores = ExplanationScores.load(snakemake.input.maps)
    per_map, segmentation = mask_evaluation(scores, manifest, manifest.attrs["mask_ids"], params.resize_mode)
    per_map = per_map.assign(model=model)
    summary = evaluation_summary(per_map, model, params.n_boot)
    write_table(per_map, outputs.per_map)
    write_table(summary, outputs.summary)
    write_table(segmentation.assign(model=model), outputs.segmentation)
    summary_figure(summary, outputs.figure, random_weights=params.random_weights)
    log.info("evaluated %d maps\n%s\n%s", len(per_map), summary.to_string(), segmentation.to_string())
