"""The plots of the perturbation analysis of one model x dataset (Snakemake script; no torch): drop
heatmaps, severity curves and, per family, drift probabilities and trajectories. The pictures
(previews, susceptibility galleries) are drawn by ``perturbation_galleries.py``."""

import pandas as pd

from cliplens.datasets import read_manifest
from cliplens.perturbation.drift import drift_trajectories
from cliplens.perturbation.figures import (
    plot_drift_probabilities,
    plot_drift_trajectories,
    plot_drop_heatmaps,
    plot_severity_curves,
)
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    inputs, outputs, params = snakemake.input, snakemake.output, snakemake.params
    common = {"dataset": snakemake.wildcards.dataset, "random_weights": params.random_weights}
    aggregate = pd.read_parquet(inputs.aggregate)
    plot_drop_heatmaps(aggregate, outputs.heatmap, **common)
    for metric in params.metrics:
        plot_severity_curves(aggregate, metric, outputs[f"severity_{metric}"], **common)

    drift = pd.read_parquet(inputs.drift[0])  # the first label set drives the figures
    trajectories = drift_trajectories(drift)
    images = read_manifest(inputs.manifest)["image_id"].head(params.drift_images).tolist()
    for family in params.families:
        plot_drift_probabilities(drift, images, outputs[f"drift_{family}"], family=family, **common)
        plot_drift_trajectories(trajectories, images, outputs[f"trajectories_{family}"], family=family, **common)
    log.info("plots of %d families", len(params.families))
