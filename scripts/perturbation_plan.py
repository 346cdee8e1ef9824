"""Write the perturbation plan: one row per image x family x severity x seed (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.io import atomic_output
from cliplens.perturbation.grid import plan_table
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    plan = plan_table(read_manifest(snakemake.input.manifest)["image_id"].tolist(), snakemake.params.grid)
    with atomic_output(snakemake.output[0]) as tmp:
        plan.to_parquet(tmp, index=False)
    log.info("plan: %d rows", len(plan))
