"""Planning the workflow: everything the rules files need to name their jobs and outputs.

Cheap to import (no torch): the rules files import it when Snakemake parses the workflow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cliplens.architectures import architecture_config
from cliplens.textpools import (
    BUILTIN_POOL,
    POOL_NAMES,
    PROPERTIES_FILE,
    TEXTSPAN_POOLS,
    textspan_pool_path,
)

CLEAN = "clean"


def num_shards(num_images: int, shard_size: int) -> int:
    """Shards the embedding step splits a dataset into (at least one)."""
    return max(1, math.ceil(num_images / shard_size))


DEFAULT_QUERY_IMAGES = 2
"""Query images when none are configured: the first decomposed images."""


def decomposable(model_cfg: Mapping[str, Any]) -> bool:
    """Whether the head decomposition supports a model: an open_clip ViT with CLS pooling.

    Decided from the architecture's open_clip config, without building the model. A model
    without a known architecture (an OpenAI checkpoint without ``model.arch``) counts as
    supported; its job then fails with the decomposition's own message if it is not.
    """
    config = architecture_config(model_cfg.get("arch"))
    if config is None:
        return True
    vision = config.get("vision_cfg", {})
    return (
        isinstance(vision.get("layers"), int)
        and not vision.get("timm_model_name")
        and not vision.get("attentional_pool")
        and (vision.get("pool_type") or "tok") == "tok"
    )


def query_map_names(queries: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Names of the topic-map figures (query image x text) and contrastive-map figures (query image x pair)."""
    images = range(len(queries["images"]) or DEFAULT_QUERY_IMAGES)
    topic = [f"topic_maps/image{i}_text{j}" for i in images for j in range(len(queries["texts"]))]
    contrastive = [f"contrastive_maps/image{i}_pair{j}" for i in images for j in range(len(queries["contrastive"]))]
    return topic, contrastive


def output_name(figure: str) -> str:
    """The rule-output name of a query figure: ``topic_maps/image0_text1`` -> ``topic_maps_image0_text1``."""
    return figure.replace("/", "_")


def labelled(dataset_cfg: Mapping[str, Any]) -> bool:
    """Whether a dataset has labels: every kind but a folder given without ``dataset.labels_csv``."""
    return dataset_cfg["kind"] != "folder" or dataset_cfg["labels_csv"] is not None


def interpret_figure_names(cfg: Mapping[str, Any]) -> list[str]:
    """Every figure of the head-level interpretation of the configured dataset (names without .png):
    mean-ablation and segmentation need class names (a folder without labels has none), the
    segmentation's evaluation masks (coco128)."""
    names = ["mean_ablation"] if labelled(cfg["dataset"]) else []
    names += ["textspan", "head_properties", "interpretability_metrics"]
    names += ["property_neighbours", "head_image_neighbours", "head_text_neighbours"]
    names += [name for group in query_map_names(cfg["interpret"]["queries"]) for name in group]
    dataset = cfg["dataset"]
    if labelled(dataset):
        names.append("segmentation")
    if dataset["kind"] == "coco128":
        names.append("segmentation_evaluation")
    return names


def pool_key(pool: str) -> str:
    """Name of a text pool in result paths: the pool's name, or ``file-<stem>`` for a text file."""
    if pool in POOL_NAMES:
        return pool
    return "file-" + re.sub(r"[^A-Za-z0-9_.+-]", "_", Path(pool).stem)


def pool_file(textspan_cfg: Mapping[str, Any]) -> Path:
    """The text file of the configured pool (a paper pool is checked against its pinned SHA-256)."""
    pool = textspan_cfg["pool"]
    if pool == "builtin":
        return within_workdir(BUILTIN_POOL)
    if pool in TEXTSPAN_POOLS:
        return textspan_pool_path(pool, textspan_cfg["pool_dir"])
    return Path(pool).expanduser()


def properties_file(path: str | None) -> Path:
    """The property descriptions file: the configured one, or the built-in one."""
    return within_workdir(PROPERTIES_FILE) if path is None else Path(path).expanduser()


def within_workdir(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it: a job input that names a
    file of the project then stays the same when the project directory moves."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def stale_results(results_dir: str | Path, models: list[str], dataset: str, used: list[str]) -> list[Path]:
    """Files of this run's result sets that none of its jobs writes or reads: what an earlier
    configuration left.

    A result set is the ``dataset=<dataset>`` folders under ``results_dir``, for the run's ``models``
    where a path names a model (another model's or dataset's results are not this run's to judge;
    a dataset's files that name no model, such as its previews, are). ``used`` are the paths the
    run's jobs write or read, files or folders; a PDF beside a used PNG counts as used. Hidden files
    (Snakemake's and the atomic writers' temporaries) are left alone.
    """
    root = Path(results_dir)
    used_paths = {Path(path) for path in used}
    stale = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts  # not the folders above results_dir, whatever their names
        if not path.is_file() or f"dataset={dataset}" not in parts or any(part.startswith(".") for part in parts):
            continue
        named_models = [part.removeprefix("model=") for part in parts if part.startswith("model=")]
        if any(model not in models for model in named_models):
            continue
        if path in used_paths or not used_paths.isdisjoint(path.parents):
            continue
        if path.suffix == ".pdf" and path.with_suffix(".png") in used_paths:
            continue
        stale.append(path)
    return stale


def remove_files(paths: list[Path], root: str | Path) -> list[tuple[Path, OSError]]:
    """Delete ``paths`` and the folders below ``root`` that this leaves empty; return the files that
    could not be deleted, with why."""
    failed = []
    for path in paths:
        try:
            path.unlink()
            for folder in path.parents:
                if folder == Path(root) or any(folder.iterdir()):
                    break
                folder.rmdir()
        except OSError as error:
            failed.append((path, error))
    return failed
