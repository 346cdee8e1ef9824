"""Susceptibility gallery and semantic drift figures of one family (Snakemake script)."""

import pandas as pd

from cliplens.datasets import read_manifest
from cliplens.perturbation.drift import drift_trajectories
from cliplens.perturbation.embedding import perturbed_views
from cliplens.perturbation.figures import plot_drift_probabilities, plot_drift_trajectories, plot_susceptibility_gallery
from cliplens.perturbation.grid import CLEAN_SPEC, family_specs
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    inputs, outputs, params = snakemake.input, snakemake.output, snakemake.params
    family, dataset, grid = snakemake.wildcards.family, snakemake.wildcards.dataset, params.perturbation
    common = {"dataset": dataset, "random_weights": params.random_weights}
    top = pd.read_csv(inputs.top_k, dtype={"image_id": str})
    top = top[top["family"] == family]
    manifest = read_manifest(inputs.manifest)
    shown = manifest[manifest["image_id"].isin(set(top["image_id"].astype(str)))]
    specs = [CLEAN_SPEC] + family_specs(family, grid["severities"], grid["seeds"][:1], grid["params"])
    views = perturbed_views(shown, specs, params.image_size, grid["backend"])
    plot_susceptibility_gallery(
        top,
        views,
        outputs.gallery,
        family=family,
        severities=[0, *sorted(grid["severities"])],
        per_image=pd.read_parquet(inputs.per_image),
        **common,
    )
    drift = pd.read_parquet(inputs.drift[0])  # the first label set drives the figures
    images = manifest["image_id"].head(params.drift_images).tolist()
    plot_drift_probabilities(drift, images, outputs.drift, family=family, **common)
    plot_drift_trajectories(drift_trajectories(drift), images, outputs.trajectories, family=family, **common)
