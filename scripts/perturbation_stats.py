"""Statistics of one model x dataset over the whole perturbation grid (Snakemake script)."""

from cliplens.io import write_table
from cliplens.perturbation.analysis import perturbation_tables
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    inputs, outputs, params = snakemake.input, snakemake.output, snakemake.params
    per_family = {family: inputs[f"perturbed_{family}"] for family in params.families}
    tables = perturbation_tables(
        inputs.clean,
        per_family,
        inputs.labels,
        dict(zip(params.label_sets, inputs.drift)),
        {"model": snakemake.wildcards.model, "dataset": snakemake.wildcards.dataset},
        params.stats,
    )
    tables_by_output = [
        (tables.per_image, outputs.per_image),
        (tables.aggregate, outputs.aggregate),
        (tables.aggregate, outputs.aggregate_csv),
        (tables.susceptibility, outputs.susceptibility),
        (tables.top_k, outputs.top_k),
        *zip(tables.drift.values(), outputs.drift),
        *zip(tables.flips.values(), outputs.flips),
    ]
    for frame, path in tables_by_output:
        write_table(frame, path)
    log.info("%d per-image rows, %d aggregate rows", len(tables.per_image), len(tables.aggregate))
