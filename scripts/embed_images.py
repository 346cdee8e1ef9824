"""Embed one shard of a dataset under one perturbation family (Snakemake script)."""

from cliplens.datasets import read_manifest, shard_rows
from cliplens.io import IMAGE_FIELDS, EmbeddingWriter, embedding_schema
from cliplens.models import load_model
from cliplens.perturbation.embedding import extract_image_embeddings
from cliplens.perturbation.grid import family_specs
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    params, resources = snakemake.params, snakemake.resources
    grid = params.perturbation
    loaded = load_model(params.model, resources.device)
    manifest = read_manifest(snakemake.input.manifest)
    rows = shard_rows(manifest, int(snakemake.wildcards.shard), params.shard_size)
    specs = family_specs(grid["family"], grid.get("severities", []), grid.get("seeds", []), grid.get("params", {}))
    provenance = {**loaded.provenance, "dataset": snakemake.wildcards.dataset, "perturbation": grid, "dtype": params.dtype}
    schema = embedding_schema(IMAGE_FIELDS, loaded.embed_dim, params.dtype, provenance)
    with EmbeddingWriter(snakemake.output[0], schema) as writer:
        written = extract_image_embeddings(
            loaded, rows, specs, writer, resources.batch_size, resources.num_workers, grid.get("backend", "torch")
        )
    log.info("wrote %d embeddings (%d images x %d grid cells)", written, len(rows), len(specs))
