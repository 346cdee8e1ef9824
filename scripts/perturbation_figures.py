"""Family x severity heatmaps and severity curves of one model x dataset (Snakemake script)."""

import pandas as pd

from cliplens.perturbation.figures import plot_drop_heatmaps, plot_severity_curves
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    aggregate = pd.read_parquet(snakemake.input.aggregate)
    dataset, random_weights = snakemake.wildcards.dataset, snakemake.params.random_weights
    plot_drop_heatmaps(aggregate, snakemake.output.heatmap, dataset=dataset, random_weights=random_weights)
    for metric, path in zip(["alignment", "top1", "self_similarity"], snakemake.output.curves):
        plot_severity_curves(aggregate, metric, path, dataset=dataset, random_weights=random_weights)
