"""Embed the property descriptions that label heads, once per model (Snakemake script)."""

from cliplens.interpret.labels import write_property_embeddings
from cliplens.models import load_model
from cliplens.runtime import job_logging
from cliplens.textpools import load_properties

with job_logging(snakemake.log[0], snakemake.threads) as log:
    properties = load_properties(snakemake.input.properties)
    write_property_embeddings(load_model(snakemake.params.model, snakemake.resources.device), properties, snakemake.output[0])
    log.info("embedded %d properties: %s", len(properties), list(properties))
