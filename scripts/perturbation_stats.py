"""Statistics of one model x dataset over the whole perturbation grid (Snakemake script)."""

from cliplens.files import atomic_output
from cliplens.perturbation_analysis import perturbation_tables
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    inputs, outputs, params = snakemake.input, snakemake.output, snakemake.params
    per_family = {
        family: [path for path in inputs.perturbed if f"/perturbation={family}/" in path] for family in params.families
    }
    tables = perturbation_tables(
        inputs.clean,
        per_family,
        inputs.labels,
        dict(zip(params.label_sets, inputs.drift)),
        {"model": snakemake.wildcards.model, "dataset": snakemake.wildcards.dataset},
        params.stats,
    )
    frames = [
        (tables.per_image, outputs.per_image), (tables.aggregate, outputs.aggregate),
        (tables.susceptibility, outputs.susceptibility),
        *zip(tables.drift.values(), outputs.drift),
    ]
    for frame, path in frames:
        with atomic_output(path) as tmp:
            frame.to_parquet(tmp, index=False)
    for frame, path in [(tables.aggregate, outputs.aggregate_csv), (tables.top_k, outputs.top_k), *zip(tables.flips.values(), outputs.flips)]:
        with atomic_output(path) as tmp:
            frame.to_csv(tmp, index=False)
    log.info("%d per-image rows, %d aggregate rows", len(tables.per_image), len(tables.aggregate))
