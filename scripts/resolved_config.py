"""Write the resolved configuration of this run (Snakemake script)."""

import yaml

from cliplens.io import atomic_output
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0]), atomic_output(snakemake.output[0]) as tmp:
    tmp.write_text(yaml.safe_dump(snakemake.params.config, sort_keys=False))
