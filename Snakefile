# cliplens: one Snakemake workflow, configured with Hydra (config/).
#   snakemake --cores all                                   # default config
#   snakemake --cores all --config model=tiny_random        # any Hydra override, key=value
from pathlib import Path

from snakemake.exceptions import WorkflowError

from cliplens.config import ConfigError, compose_config, overrides_from_mapping

try:
    CFG = compose_config(Path(workflow.basedir) / "config", overrides_from_mapping(config))
except ConfigError as error:
    raise WorkflowError(f"cliplens configuration: {error}") from None


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/perturbation.smk"


rule all:
    default_target: True
    input:
        all_targets(),
