"""Embed the TEXTSPAN text pool once per model (Snakemake script)."""

from cliplens.models import load_model
from cliplens.runtime import job_logging
from cliplens.text import write_pool_embeddings
from cliplens.textpools import load_pool

with job_logging(snakemake.log[0], snakemake.threads) as log:
    texts = load_pool(snakemake.input.pool)
    write_pool_embeddings(
        load_model(snakemake.params.model, snakemake.resources.device), texts, snakemake.params.templates, snakemake.output[0]
    )
    log.info("embedded %d pool texts (templates %s)", len(texts), snakemake.params.templates)
