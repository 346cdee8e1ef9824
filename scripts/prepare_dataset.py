"""Prepare a dataset's manifest and rejects file (Snakemake script)."""

from pathlib import Path

from cliplens.datasets import prepare, write_manifest
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    out = Path(snakemake.output.manifest).parent
    manifest, rejects = prepare(snakemake.params.dataset, out)
    write_manifest(manifest, rejects, Path(snakemake.output.manifest), Path(snakemake.output.rejects))
    log.info("%d images in the manifest, %d rejected", len(manifest), len(rejects))
