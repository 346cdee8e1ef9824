# Helpers shared by every rules file: paths, the grid, and the config slices each rule sees.
import functools

from cliplens.planning import (
    CLEAN,
    decomposable,
    interpret_figure_names,
    labelled,
    num_shards,
    remove_files,
    stale_results,
)

RESULTS = CFG["results_dir"]
DATA = CFG["data_dir"]
PERTURBATION = f"{RESULTS}/perturbation"
FIGURES = f"{RESULTS}/figures"
DATASET = CFG["dataset"]["name"]
MODELS = list(CFG["model_grid"])
FAMILIES = list(CFG["perturbation"]["families"])
LABEL_SETS = list(CFG["drift"]["label_sets"])
SHARDS = [f"{i:05d}" for i in range(num_shards(CFG["dataset"]["num_images"], CFG["embedding"]["shard_size"]))]


localrules:
    resolved_config,
    perturbation_plan,


wildcard_constraints:
    model=r"[^/=]+",
    dataset=r"[^/=]+",
    family=r"[^/=]+",
    shard=r"\d{5}",


def model_config(wildcards):
    """The model's config section bar its device: a change reruns exactly that model's jobs."""
    return {key: value for key, value in CFG["model_grid"][wildcards.model].items() if key != "device"}


def model_device(wildcards):
    """The device a model job runs on: a resource, so that moving jobs to another device reruns none
    (their results differ only by floating-point rounding)."""
    return CFG["model_grid"][wildcards.model]["device"]


LONG_CHAIN_PRIORITY = 1
"""Priority of the longest jobs and of the jobs they wait for (bar the dataset): the perturbation
plots and galleries (after every embedding, the labels' embeddings and the statistics) and the
explanation maps' evaluation (after the maps). Without it Snakemake tends to leave a long job for
the end, where it runs alone on one core; with it the short jobs of the other lines fill the
remaining cores."""


MODEL_JOB_THREADS = 4
"""Torch threads of a job that runs a model, at most (profiles/slurm asks for this many on a cluster)."""


def model_job_threads(wildcards):
    """Threads of a model job: half the cores, 1 to MODEL_JOB_THREADS, so that two model jobs run
    side by side (on a small machine a job's start-up, not its forward passes, is most of its time)."""
    cores = workflow._cores  # None on a cluster without --cores (the public workflow.cores raises then)
    return max(1, min(MODEL_JOB_THREADS, cores // 2)) if cores else MODEL_JOB_THREADS


@functools.cache
def runs_on_cuda(device):
    """Whether a model configured for ``device`` runs on CUDA on this machine (torch is imported only when asked)."""
    from cliplens.runtime import resolve_device

    return resolve_device(device).type == "cuda"


def gpu_slots(wildcards):
    """The `gpu` resource of a model job: 1 when its model runs on CUDA here, else 0, so that the
    one-GPU-job limit of profiles/default does not serialise a CPU-only machine. (profiles/slurm
    sets gpu=1 for these rules: the submitting node need not have the GPU.)"""
    return int(runs_on_cuda(CFG["model_grid"][wildcards.model]["device"]))


def family_config(family):
    """One family's slice of the perturbation grid (clean needs none)."""
    if family == CLEAN:
        return {"family": CLEAN}
    grid = CFG["perturbation"]
    return {
        "family": family,
        "params": grid["families"][family] or {},
        "severities": sorted(grid["severities"]),
        "seeds": grid["seeds"],
        "backend": grid["backend"],
    }


def perturbation_config(wildcards):
    """The slice of the perturbation grid of the job's family."""
    return family_config(wildcards.family)


def embedding_params(wildcards, families=None):
    """What the embedding shards a job reads were computed from: the model, the storage dtype and
    every family's slice (default: clean and all families). As params of the reading job, a change
    reruns it even when an interrupted rerun removed the changed shards together with their record:
    Snakemake rebuilds a missing intermediate file only for a job that has to run anyway."""
    families = [CLEAN, *FAMILIES] if families is None else families
    return {
        "model": model_config(wildcards),
        "dtype": CFG["embedding"]["dtype"],
        "families": {family: family_config(family) for family in families},
    }


def embedding_files(model, families):
    """The embedding shards of a model for the given families."""
    return expand(
        f"{RESULTS}/embeddings/model={model}/dataset={DATASET}/perturbation={{family}}/shard={{shard}}.parquet",
        family=families,
        shard=SHARDS,
    )


onstart:
    # Stop before any job writes output when a model's pretrained weights cannot be had, a local
    # checkpoint does not fit its architecture, or (jobs running on this machine) its device does
    # not exist here.
    from cliplens.config import ConfigError, validate_device
    from cliplens.weights import WeightsUnavailableError, ensure_weights

    for model_cfg in CFG["model_grid"].values():
        try:
            if workflow.local_exec:
                validate_device(model_cfg)
            ensure_weights(model_cfg)
            if model_cfg["source"] == "checkpoint":
                from cliplens.models import check_checkpoint_fits  # imports torch: only for checkpoints

                check_checkpoint_fits(model_cfg)
        except (ConfigError, WeightsUnavailableError) as error:
            raise WorkflowError(f"cliplens configuration: {error}") from None
    remove_stale_results()


def remove_stale_results():
    """On a run of the whole workflow (its default target; no batch, allowed rules, until or omit), delete
    the files of this run's result sets that no job of it writes or reads (a family or label set taken
    out of the grid, fewer shards, a figure no longer drawn), so that a results folder holds only
    current results."""
    dag, settings = workflow.dag, workflow.dag_settings
    whole = {job.rule.name for job in dag.targetjobs} == {"all"}
    partial = settings.batch or settings.allowed_rules or dag.untilrules or dag.untilfiles or dag.omitrules or dag.omitfiles
    if not whole or partial or any(dag.checkpoint_jobs):  # with a checkpoint, later jobs are not yet planned
        return
    from snakemake.logging import logger

    used = [path for job in dag.jobs for path in (*job.output, *job.input)]
    stale = stale_results(RESULTS, MODELS, DATASET, used)
    failed = remove_files(stale, RESULTS)
    unremoved = {path for path, _ in failed}
    removed = [path for path in stale if path not in unremoved]
    if removed:
        logger.warning(
            f"cliplens: removed {len(removed)} results that the current configuration no longer produces, such as {removed[0]}"
        )
    if failed:
        logger.warning(f"cliplens: {len(failed)} stale results could not be removed, such as {failed[0][0]}: {failed[0][1]}")


def has_random_weights(model):
    """Whether the model's weights are random: its figures say so."""
    return CFG["model_grid"][model]["source"] == "random"


def random_weights(wildcards):
    """Whether the weights of the job's model are random."""
    return has_random_weights(wildcards.model)


LABELLED = labelled(CFG["dataset"])
if not LABELLED and workflow.is_main_process:
    from snakemake.logging import logger

    logger.warning(
        f"cliplens: dataset {DATASET!r} has no labels (dataset.labels_csv is not set), so what needs labels is left out: "
        "perturbation statistics and figures, label explanation maps and their evaluation, mean-ablation and "
        "segmentation; embeddings and their summary, previews, free-text prompt maps and the other head-level analyses run"
    )


def perturbation_targets():
    targets = [f"{PERTURBATION}/dataset={DATASET}/plan.parquet"]
    targets += expand(f"{FIGURES}/dataset={DATASET}/perturbation/preview_{{family}}.png", family=FAMILIES)
    if not LABELLED:
        return targets + [shard for model in MODELS for shard in embedding_files(model, [CLEAN, *FAMILIES])]
    for model in MODELS:
        base = f"{FIGURES}/model={model}/dataset={DATASET}/perturbation"
        targets += [f"{base}/drop_heatmaps.png", f"{PERTURBATION}/model={model}/dataset={DATASET}/aggregate.csv"]
        targets += expand(f"{base}/{{kind}}_{{family}}.png", kind=["susceptibility", "drift", "trajectories"], family=FAMILIES)
    if len(MODELS) > 1:
        targets += expand(f"{FIGURES}/dataset={DATASET}/model_comparison_{{metric}}.png", metric=["alignment", "top1"])
    return targets


def explain_targets():
    """Explanation figures; without labels only the free-text prompt maps."""
    base = f"{FIGURES}/model={{model}}/dataset={DATASET}/explain"
    names = ["overlays", "prompt_overlays", "segmentation", "evaluation", "deletion_insertion", "sanity_check"]
    names = names if LABELLED else ["prompt_overlays"]
    return expand(f"{base}/{{name}}.png", model=MODELS, name=names)


def interpret_targets():
    """Head-level interpretation figures of every ViT model of the grid (interpret.smk)."""
    models = [model for model in MODELS if decomposable(CFG["model_grid"][model])]
    return expand(
        f"{FIGURES}/model={{model}}/dataset={DATASET}/interpret/{{name}}.png", model=models, name=interpret_figure_names(CFG)
    )


def groundtruth_targets():
    """Training records of the models the workflow trains; on a planted dataset, the ground-truth report."""
    targets = [
        f"{FIGURES}/model={model}/training_curve.png" for model in MODELS if CFG["model_grid"][model]["source"] == "planted"
    ]
    if CFG["dataset"]["kind"] == "planted":
        targets += expand(f"{RESULTS}/groundtruth/model={{model}}/dataset={DATASET}/expectations.md", model=MODELS)
    return targets


def all_targets():
    """Everything `snakemake` builds by default."""
    targets = [f"{RESULTS}/config/resolved.yaml"]
    targets += expand(f"{RESULTS}/summary/model={{model}}/dataset={DATASET}/summary.md", model=MODELS)
    targets += perturbation_targets()
    targets += explain_targets()
    targets += interpret_targets()
    targets += groundtruth_targets()
    return targets


def family_embeddings(wildcards):
    """Named inputs of the statistics: the clean shards and each family's shards (``perturbed_<family>``)."""
    return {"clean": embedding_files(wildcards.model, [CLEAN])} | {
        f"perturbed_{family}": embedding_files(wildcards.model, [family]) for family in FAMILIES
    }


def config_slice(section, *keys):
    """Only the keys of a config section that a job needs, so that editing other keys reruns nothing."""
    return {key: CFG[section][key] for key in keys}


def model_weights(wildcards):
    """The checkpoint a model is loaded from when the workflow trains it (none otherwise)."""
    model = CFG["model_grid"][wildcards.model]
    return [model["checkpoint"]] if model["source"] == "planted" else []
