"""Evaluate the decomposition's zero-shot segmentation on the masks, as the surgery maps are (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.evaluate import summarise
from cliplens.explain import mask_evaluation
from cliplens.explain_figures import summary_figure
from cliplens.files import atomic_output
from cliplens.interpretation_job import DecompositionScores
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0]) as log:
    params, outputs, model = snakemake.params, snakemake.output, snakemake.wildcards.model
    manifest = read_manifest(snakemake.input.manifest)
    if not manifest.attrs.get("mask_ids"):
        raise ValueError("the dataset has no masks to evaluate the segmentation against")
    scores = DecompositionScores.load(snakemake.input.maps)
    per_map, segmentation = mask_evaluation(scores, manifest, manifest.attrs["mask_ids"], params.resize_mode)
    per_map = per_map.assign(model=model)
    summary = summarise(per_map, by=["model", "method"], n_boot=params.n_boot)
    with atomic_output(outputs.per_map) as tmp:
        per_map.to_parquet(tmp, index=False)
    with atomic_output(outputs.summary) as tmp:
        summary.to_csv(tmp, index=False)
    with atomic_output(outputs.segmentation) as tmp:
        segmentation.assign(model=model).to_csv(tmp, index=False)
    summary_figure(summary, outputs.figure, random_weights=params.random_weights)
    log.info("evaluated %d maps\n%s\n%s", len(per_map), summary.to_string(), segmentation.to_string())
