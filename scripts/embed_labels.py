"""Embed a dataset's label set with prompt-template ensembling (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.io import TEXT_FIELDS, EmbeddingWriter, embedding_schema
from cliplens.models import load_model
from cliplens.runtime import job_logging
from cliplens.text import TEMPLATE_SETS, encode_labels

with job_logging(snakemake.log[0], snakemake.threads) as log:
    params = snakemake.params
    loaded = load_model(params.model, snakemake.resources.device)
    names = read_manifest(snakemake.input.manifest).attrs["label_names"]
    templates = TEMPLATE_SETS[params.templates]
    embeddings = encode_labels(loaded, names, templates, snakemake.resources.batch_size)
    provenance = {**loaded.provenance, "templates": params.templates, "logit_scale": float(loaded.model.logit_scale.exp())}
    schema = embedding_schema(TEXT_FIELDS, loaded.embed_dim, "float32", provenance)
    with EmbeddingWriter(snakemake.output[0], schema) as writer:
        writer.write({"label_index": range(len(names)), "label": names}, embeddings.numpy())
    log.info("embedded %d labels x %d templates", len(names), len(templates))
