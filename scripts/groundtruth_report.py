"""Every line's stated expectations on the planted world, measured, with verdicts (Snakemake script)."""

import pandas as pd

from cliplens.groundtruth import expectations_markdown, sanity_expectations
from cliplens.io import atomic_output, write_table
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    inputs, outputs = snakemake.input, snakemake.output
    parts = [pd.read_csv(path) for path in (inputs.perturbation, inputs.maps, inputs.heads)]
    table = pd.concat([*parts, sanity_expectations(pd.read_csv(inputs.sanity))], ignore_index=True)
    write_table(table, outputs.table)
    with atomic_output(outputs.markdown) as tmp:
        tmp.write_text(expectations_markdown(table, snakemake.wildcards.model, snakemake.params.random_weights))
    log.info("%d of %d expectations hold", (table["verdict"] == "holds").sum(), len(table))
