"""Evaluate explanation maps: mask metrics, segmentation mIoU, deletion/insertion (Snakemake script)."""

import pandas as pd

import cliplens.explain.methods  # noqa: F401  (registers raw, surgery and gradcam)
from cliplens.datasets import read_manifest
from cliplens.explain.evaluation import deletion_insertion_scores
from cliplens.explain.figures import deletion_insertion_figure
from cliplens.io import write_table
from cliplens.models import load_model
from cliplens.plotting import summary_figure
from cliplens.runtime import job_logging
from cliplens.stored_maps import ExplanationScores, evaluation_summary, mask_evaluation

with job_logging(snakemake.log[0], snakemake.threads) as log:
    params, outputs, model = snakemake.params, snakemake.output, snakemake.wildcards.model
    cfg = params.explain
    explanations = ExplanationScores.load(snakemake.input.maps)
    manifest = read_manifest(snakemake.input.manifest)
    loaded = load_model(params.model, snakemake.resources.device)
    deletion, curves = deletion_insertion_scores(loaded, explanations, manifest, cfg, snakemake.resources.batch_size)
    tables = [deletion]
    segmentation = pd.DataFrame(columns=["method", "miou", "pixel_accuracy"])
    if manifest.attrs.get("mask_ids"):
        per_mask, segmentation = mask_evaluation(explanations, manifest, manifest.attrs["mask_ids"], cfg["resize_mode"])
        tables.append(per_mask)
    per_map = pd.concat(tables, ignore_index=True).assign(model=model)
    summary = evaluation_summary(per_map, model, cfg["evaluation"]["n_boot"])
    write_table(per_map, outputs.per_map)
    write_table(summary, outputs.summary)
    write_table(segmentation.assign(model=model), outputs.segmentation)
    summary_figure(summary, outputs.figure, random_weights=params.random_weights)
    deletion_insertion_figure(curves, outputs.curves, random_weights=params.random_weights)
    log.info("evaluated %d maps\n%s", len(per_map), summary.to_string())
