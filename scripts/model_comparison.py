"""Compare the models of the grid, metric vs severity per family (Snakemake script)."""

import pandas as pd

from cliplens.perturbation.figures import plot_model_comparison
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    aggregate = pd.concat([pd.read_parquet(path) for path in snakemake.input.aggregates], ignore_index=True)
    for metric, path in zip(["alignment", "top1"], snakemake.output):
        plot_model_comparison(
            aggregate, metric, path, dataset=snakemake.wildcards.dataset, random_weights=snakemake.params.random_weights
        )
