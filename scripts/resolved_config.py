"""Write the resolved configuration of this run (Snakemake script)."""

import yaml

from cliplens.io import atomic_output

with atomic_output(snakemake.output[0]) as tmp:
    tmp.write_text(yaml.safe_dump(snakemake.params.config, sort_keys=False))
