"""Property labels of heads and interpretability metrics with bootstrap CIs (Snakemake script)."""

import pandas as pd

from cliplens.interpret.figures import plot_head_properties, plot_interpretability_metrics
from cliplens.interpret.labels import interpretability_metrics, label_heads, read_property_embeddings
from cliplens.io import atomic_output, read_pool_embeddings
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    params, outputs = snakemake.params, snakemake.output
    _, pool = read_pool_embeddings(snakemake.input.pool)
    labels = label_heads(
        pd.read_csv(snakemake.input.spans), pool, read_property_embeddings(snakemake.input.properties), params.weighting
    )
    metrics = interpretability_metrics(labels, n_boot=params.n_boot, seed=params.seed)
    with atomic_output(outputs.labels) as tmp:
        labels.to_frame().to_csv(tmp, index=False)
    with atomic_output(outputs.metrics) as tmp:
        metrics.to_csv(tmp, index=False)
    plot_head_properties(labels, outputs.figure, random_weights=params.random_weights)
    plot_interpretability_metrics(metrics, outputs.metrics_figure, random_weights=params.random_weights)
    log.info("labelled %d heads\n%s", len(labels.heads), metrics.to_string())
