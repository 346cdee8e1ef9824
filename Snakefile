# cliplens: one Snakemake workflow, configured with Hydra (config/).
#   snakemake --cores all                                   # default config
#   snakemake --cores all --config model=tiny_random        # any Hydra override, key=value
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

# Jobs import the library of this workflow's own src/, also inside --use-conda environments.
SRC = str(Path(workflow.basedir) / "src")
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])))

from cliplens.config import ConfigError, compose_config, overrides_from_mapping

try:
    # jobs (and cluster job steps) re-read the workflow: the main process has validated everything
    CFG = compose_config(Path(workflow.basedir) / "config", overrides_from_mapping(config), workflow.is_main_process)
except ConfigError as error:
    raise WorkflowError(f"cliplens configuration: {error}") from None


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/perturbation.smk"
include: "workflow/rules/explain.smk"
include: "workflow/rules/interpret.smk"
include: "workflow/rules/groundtruth.smk"


rule all:
    default_target: True
    input:
        all_targets(),
