"""Every figure of the perturbation analysis of one model x dataset (Snakemake script): drop heatmaps,
severity curves and, per family, the susceptibility gallery, drift probabilities and trajectories."""

import pandas as pd

from cliplens.datasets import read_manifest
from cliplens.perturbation.drift import drift_trajectories
from cliplens.perturbation.embedding import perturbed_views
from cliplens.perturbation.figures import (
    plot_drift_probabilities,
    plot_drift_trajectories,
    plot_drop_heatmaps,
    plot_severity_curves,
    plot_susceptibility_gallery,
)
from cliplens.perturbation.grid import family_specs
from cliplens.plotting import set_gallery_pdf
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    inputs, outputs, params = snakemake.input, snakemake.output, snakemake.params
    set_gallery_pdf(params.gallery_pdf)
    common = {"dataset": snakemake.wildcards.dataset, "random_weights": params.random_weights}
    aggregate = pd.read_parquet(inputs.aggregate)
    plot_drop_heatmaps(aggregate, outputs.heatmap, **common)
    for metric in params.metrics:
        plot_severity_curves(aggregate, metric, outputs[f"severity_{metric}"], **common)

    top = pd.read_csv(inputs.top_k, dtype={"image_id": str})
    manifest = read_manifest(inputs.manifest)
    grids = params.families
    shown = {family: set(top.loc[top["family"] == family, "image_id"]) for family in grids}
    specs = {
        family: family_specs(family, grid["severities"], grid["seeds"][:1], grid["params"]) for family, grid in grids.items()
    }
    rows = manifest[manifest["image_id"].isin(set().union(*shown.values()))]
    views = perturbed_views(rows, specs, params.image_size, params.backend, shown)
    per_image = pd.read_parquet(inputs.per_image)
    drift = pd.read_parquet(inputs.drift[0])  # the first label set drives the figures
    trajectories = drift_trajectories(drift)
    images = manifest["image_id"].head(params.drift_images).tolist()
    for family, grid in grids.items():
        gallery = outputs[f"susceptibility_{family}"]
        severities = [0, *sorted(grid["severities"])]
        plot_susceptibility_gallery(
            top, views[family], gallery, family=family, severities=severities, per_image=per_image, **common
        )
        plot_drift_probabilities(drift, images, outputs[f"drift_{family}"], family=family, **common)
        plot_drift_trajectories(trajectories, images, outputs[f"trajectories_{family}"], family=family, **common)
    log.info("figures of %d families (%d images in the galleries)", len(grids), len(rows))
