"""Planning at scale: a 50,000-image folder shards into the expected embedding jobs, and a large
grid (5 models x 20 perturbation families x 5 severities x 50 shards) plans in bounded time."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from cliplens.perturbation.families import FAMILIES

NUM_IMAGES = 50_000


def plan(workdir: Path, config: list[str]) -> tuple[dict[str, int], float]:
    """Dry-run the workflow; returns the job count per rule and the wall-clock seconds it took."""
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    command += ["-n", "--quiet", "rules", "--config", *config]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout.split("Job stats:")[1].split("total")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)}, seconds


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """50,000 empty .jpg files: planning counts them and never opens one."""
    folder = tmp_path_factory.mktemp("images")
    for i in range(NUM_IMAGES):
        (folder / f"{i:05d}.jpg").touch()
    return folder


def folder_dataset(folder: Path, shard_size: int) -> list[str]:
    return ["model=tiny_random", "dataset=folder", f"dataset__path={folder}", f"embedding__shard_size={shard_size}"]


def test_folder_dataset_plans_one_embedding_job_per_family_and_shard(image_folder, tmp_path):
    families = yaml.safe_load((ROOT / "config" / "perturbation" / "smoke.yaml").read_text())["families"]
    jobs, _ = plan(tmp_path, folder_dataset(image_folder, 3000) + ["perturbation=smoke"])
    assert jobs["embed_images"] == (1 + len(families)) * math.ceil(NUM_IMAGES / 3000)  # 17 shards, the last one short
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_large_grid_plans_in_bounded_time(image_folder, tmp_path):

    default = yaml.safe_load((ROOT / "config" / "perturbation" / "default.yaml").read_text())
    extra = [name for name, family in FAMILIES.items() if name not in default["families"] and not family.needs_mask]
    families = [*default["families"], *extra][:20]
    models = ["tiny_random_resnet", "vit_b_32_openai", "vit_b_16_openai", "rn50_openai"]  # beside tiny_random
    labels = tmp_path / "labels.csv"  # labelled: the statistics and their figures are planned too
    labels.write_text("file,label\n00000.jpg,a\n00001.jpg,b\n")
    config = folder_dataset(image_folder, 1000) + [
        f"dataset__labels_csv={labels}",
        f"models=[{','.join(models)}]",
        "perturbation=default",
        "perturbation__families={" + ", ".join(f"{name}: {{}}" for name in families) + "}",
        "perturbation__severities=[1,2,3,4,5]",
    ]
    jobs, seconds = plan(tmp_path, config)
    print(f"planned {sum(jobs.values())} jobs in {seconds:.1f} s")
    assert jobs["embed_images"] == 5 * (1 + 20) * 50
    assert jobs["perturbation_figures"] == 5 and jobs["perturbation_galleries"] == 1  # plots per model, pictures per dataset
    assert seconds < 120


def planned_jobs(workdir: Path, *args: str) -> dict[str, tuple[int, str, int]]:
    """(threads, gpu resource, priority) of each rule in a dry run's job list."""
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "-n", *args]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = {}
    for rule, body in re.findall(r"^rule (\w+):\n((?:    .*\n)+)", result.stdout, flags=re.MULTILINE):
        threads = re.search(r"threads: (\d+)", body)
        gpu = re.search(r"\bgpu=(\d+)", body)
        priority = re.search(r"priority: (\d+)", body)
        jobs[rule] = (int(threads[1]) if threads else 1, gpu[1] if gpu else "none", int(priority[1]) if priority else 0)
    return jobs


@pytest.mark.parametrize(("cores", "threads"), [(2, 1), (4, 2), (16, 4)])
def test_model_jobs_on_a_cpu_machine_share_the_cores(tmp_path, cores, threads):
    """Without CUDA no model job holds the workstation's single gpu slot, and each takes at most half
    the cores (4 at most), so two run side by side; the planted model's training keeps 4."""
    jobs = planned_jobs(tmp_path, "--cores", str(cores), "--config", "model=tiny_random", "model__device=cpu")
    model_rules = {rule for rule, (_, gpu, _) in jobs.items() if gpu != "none"}
    assert {"embed_images", "explain_maps", "decompose_images"} <= model_rules
    assert all(jobs[rule][:2] == (threads, "0") for rule in model_rules), jobs
    planted = planned_jobs(
        tmp_path, "--cores", str(cores), "--config", "dataset=planted", "model=planted_clip", "model__device=cpu"
    )
    assert planted["train_planted_model"][:2] == (min(cores, 4), "0")


def test_model_jobs_on_cuda_hold_the_gpu_slot(tmp_path):
    jobs = planned_jobs(tmp_path, "--cores", "2", "--config", "model=tiny_random", "model__device=cuda")
    assert {rule for rule, (_, gpu, _) in jobs.items() if gpu == "1"} >= {"embed_images", "explain_maps", "decompose_images"}
    assert all(gpu in ("1", "none") for _, gpu, _ in jobs.values())


def test_the_chains_to_the_longest_jobs_run_first(tmp_path):
    """The longest jobs (the perturbation figures and galleries, the explanation maps' evaluation) and
    everything they wait for (bar the dataset, which all jobs wait for) go first, so that none runs
    alone at the end while the short jobs of the other lines fill the cores."""
    jobs = planned_jobs(tmp_path, "--cores", "2", "--config", "model=tiny_random")
    first = {rule for rule, (_, _, priority) in jobs.items() if priority > 0}
    perturbation = {"embed_images", "embed_labels", "embed_drift_labels", "perturbation_stats"}
    perturbation |= {"perturbation_figures", "perturbation_galleries"}
    assert first == perturbation | {"explain_maps", "explain_evaluation"}


def test_stale_results_are_what_no_job_writes_or_reads_within_the_runs_result_sets(tmp_path):
    from cliplens.planning import remove_files, stale_results

    results = tmp_path / "sweeps/dataset=d/results"  # folders above results_dir do not count, whatever their names
    base = results / "embeddings/model=m/dataset=d"
    files = {
        "written shard": base / "perturbation=clean/shard=00000.parquet",
        "read shard": base / "perturbation=blur/shard=00000.parquet",
        "removed family": base / "perturbation=rotation/shard=00000.parquet",
        "extra shard": base / "perturbation=clean/shard=00001.parquet",
        "plot": results / "figures/model=m/dataset=d/perturbation/drift_blur.png",
        "its pdf": results / "figures/model=m/dataset=d/perturbation/drift_blur.pdf",
        "pdf of a dropped plot": results / "figures/model=m/dataset=d/perturbation/drift_rotation.pdf",
        "in a folder output": results / "interpret/model=m/dataset=d/contributions/00000.npy",
        "other model": results / "embeddings/model=other/dataset=d/perturbation=rotation/shard=00000.parquet",
        "other dataset": base.parent / "dataset=e/perturbation=rotation/shard=00000.parquet",
        "no dataset": results / "models/planted/checkpoint.pt",
        "a temporary": base / "perturbation=clean/.shard=00000.parquet.123.tmp",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    written = [files["written shard"], files["plot"], results / "interpret/model=m/dataset=d/contributions"]
    used = [str(path) for path in written + [files["read shard"]]]
    stale = stale_results(results, ["m"], "d", used)
    assert stale == sorted(files[name] for name in ("removed family", "extra shard", "pdf of a dropped plot"))

    assert remove_files(stale, results) == []
    assert not (base / "perturbation=rotation").exists()  # the partition it emptied, not more
    assert (base / "perturbation=clean").is_dir() and not any(path.exists() for path in stale)
    failed = remove_files([results / "never/was.png"], results)
    assert [path for path, _ in failed] == [results / "never/was.png"]
