"""Mean-ablation of layers and heads: zero-shot accuracy from the stored contributions (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.interpret.ablation import NO_LABELS, ablation_table
from cliplens.interpret.contributions import ContributionStore
from cliplens.interpret.figures import plot_mean_ablation
from cliplens.io import atomic_output, read_embeddings
from cliplens.plotting import message_figure
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    outputs, random_weights = snakemake.output, snakemake.params.random_weights
    _, class_embeddings = read_embeddings(snakemake.input.labels)
    table = ablation_table(ContributionStore(snakemake.input.store), read_manifest(snakemake.input.manifest), class_embeddings)
    with atomic_output(outputs.table) as tmp:
        table.to_csv(tmp, index=False)
    if table["ablation"].iloc[0] == NO_LABELS:
        message_figure(f"mean-ablation measures zero-shot accuracy: {NO_LABELS}", outputs.figure, random_weights)
    else:
        plot_mean_ablation(table, outputs.figure, random_weights=random_weights)
    log.info("mean-ablation over %d images\n%s", table["n_images"].iloc[0], table.head(12).to_string())
