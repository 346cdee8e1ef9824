"""Summarise a model x dataset embedding run (Snakemake script)."""

import json

import pandas as pd

from cliplens.datasets import read_manifest
from cliplens.io import atomic_output, read_embeddings, read_provenance
from cliplens.perturbation.summary import embedding_summary, summary_markdown
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    rows, embeddings = read_embeddings(list(snakemake.input.clean))
    _, text = read_embeddings(snakemake.input.labels)
    summary = embedding_summary(
        read_manifest(snakemake.input.manifest),
        pd.read_csv(snakemake.input.rejects),
        rows,
        embeddings,
        text,
        read_provenance(snakemake.input.clean[0]),
        read_provenance(snakemake.input.labels)["logit_scale"],
    )
    with atomic_output(snakemake.output.json) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    with atomic_output(snakemake.output.markdown) as tmp:
        tmp.write_text(summary_markdown(summary))
    log.info("summary: %s", summary)
