"""Embed a controlled label set (written-out prompts) for semantic drift (Snakemake script)."""

from cliplens.io import TEXT_FIELDS, EmbeddingWriter, embedding_schema
from cliplens.models import load_model
from cliplens.runtime import job_logging
from cliplens.text import encode_prompts

with job_logging(snakemake.log[0], snakemake.threads):
    prompts = list(snakemake.params.prompts)
    loaded = load_model(snakemake.params.model, snakemake.resources.device)
    embeddings = encode_prompts(loaded, prompts)
    schema = embedding_schema(
        TEXT_FIELDS, loaded.embed_dim, "float32", {**loaded.provenance, "label_set": snakemake.wildcards.label_set}
    )
    with EmbeddingWriter(snakemake.output[0], schema) as writer:
        writer.write({"label_index": range(len(prompts)), "label": prompts}, embeddings.numpy())
