"""TEXTSPAN: a text basis for every head of the last layers (Snakemake script)."""

from cliplens.interpret.contributions import ContributionStore
from cliplens.interpret.figures import plot_textspan
from cliplens.interpret.neighbours import analysed_layers
from cliplens.interpret.textspan import textspan_heads
from cliplens.io import atomic_output, read_pool_embeddings
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    params, outputs = snakemake.params, snakemake.output
    store = ContributionStore(snakemake.input.store)
    texts, embeddings = read_pool_embeddings(snakemake.input.pool)
    layers = analysed_layers(store, params.layers)
    spans = textspan_heads(store, embeddings, texts, m=params.top_m, r=params.rank, layers=layers, criterion=params.criterion)
    with atomic_output(outputs.table) as tmp:
        spans.to_csv(tmp, index=False)
    plot_textspan(spans, outputs.figure, random_weights=params.random_weights)
    log.info(
        "TEXTSPAN of %d heads (layers %s) over %d images, pool of %d texts",
        spans.groupby(["layer", "head"]).ngroups,
        layers,
        len(store),
        len(texts),
    )
