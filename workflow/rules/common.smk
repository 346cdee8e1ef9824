# Helpers shared by every rules file: paths, the grid, and the config slices each rule sees.
from cliplens.config import num_shards
from cliplens.grid import CLEAN
from cliplens.models import WeightsUnavailableError, ensure_weights

RESULTS = CFG["results_dir"]
DATA = CFG["data_dir"]
DATASET = CFG["dataset"]["name"]
MODELS = list(CFG["model_grid"])
FAMILIES = list(CFG["perturbation"]["families"])
SHARDS = [f"{i:05d}" for i in range(num_shards(CFG["dataset"]["num_images"], CFG["embedding"]["shard_size"]))]


wildcard_constraints:
    model=r"[^/=]+",
    dataset=r"[^/=]+",
    family=r"[^/=]+",
    shard=r"\d{5}",


def model_config(wildcards):
    """The model's config section: a change reruns exactly that model's jobs."""
    return CFG["model_grid"][wildcards.model]


def perturbation_config(wildcards):
    """One family's slice of the perturbation grid (clean needs none)."""
    if wildcards.family == CLEAN:
        return {"family": CLEAN}
    grid = CFG["perturbation"]
    return {
        "family": wildcards.family,
        "params": grid["families"][wildcards.family] or {},
        "severities": sorted(grid["severities"]),
        "seeds": grid["seeds"],
        "backend": grid["backend"],
    }


def embedding_files(model, families):
    return expand(
        f"{RESULTS}/embeddings/model={model}/dataset={DATASET}/perturbation={{family}}/shard={{shard}}.parquet",
        family=families,
        shard=SHARDS,
    )


onstart:
    # Stop before any job writes output when a model's pretrained weights cannot be had.
    for model_cfg in CFG["model_grid"].values():
        try:
            ensure_weights(model_cfg)
        except WeightsUnavailableError as error:
            raise WorkflowError(str(error)) from None


def all_targets():
    """Everything `snakemake` builds by default."""
    targets = [f"{RESULTS}/config/resolved.yaml"]
    targets += expand(f"{RESULTS}/summary/model={{model}}/dataset={DATASET}/summary.md", model=MODELS)
    targets += perturbation_targets()
    return targets
