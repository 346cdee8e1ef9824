"""The SLURM profile (profiles/slurm): plans without a cluster, and runs the workflow through the
real snakemake-executor-plugin-slurm with the fake SLURM commands of tests/fake_slurm."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT

PROFILE = ROOT / "profiles" / "slurm"
FAKE_SLURM = ROOT / "tests" / "fake_slurm"
SETTINGS = yaml.safe_load((PROFILE / "config.yaml").read_text())
GPU_RULES = set(SETTINGS["set-resources"])
ACCOUNT = SETTINGS["default-resources"]["slurm_account"]
CPU_PARTITION = SETTINGS["default-resources"]["slurm_partition"]
GPU_PARTITION = SETTINGS["set-resources"]["embed_images"]["slurm_partition"]
SMOKE = ["model=tiny_random", "perturbation=smoke", "stats__n_boot=20", "explain__max_images=2"]


def snakemake(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run this repository's workflow with the SLURM profile, from ``workdir`` as a user would."""
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--profile", str(PROFILE), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env, timeout=600)


def planned_resources(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run lists, members of group jobs included."""
    jobs = re.findall(r"^( *)rule (\w+):\n((?:\1    .*\n)+)", output, flags=re.MULTILINE)
    return [(rule, dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"resources: (.*)", body)[1]))) for _, rule, body in jobs]


def planned_groups(output: str) -> dict[str, list[tuple[str, str]]]:
    """The (rule, model) of every member of each group job a dry run lists, by group."""
    blocks = re.findall(r"Group job (\w+) \(jobs in lexicogr. order\):\n((?:(?!\[|rule |Job stats).*\n)+)", output)
    return {
        group: re.findall(r"^    rule (\w+):\n(?:        .*\n)*?        wildcards: model=(\w+)", body, re.M)
        for group, body in blocks
    }


def test_workflow_profile_does_not_shadow_the_slurm_profile():
    """profiles/default is loaded too and wins key by key: a shared key must agree, or the cluster value is lost."""
    workstation = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert {key: workstation[key] for key in workstation.keys() & SETTINGS.keys()} == {
        key: SETTINGS[key] for key in workstation.keys() & SETTINGS.keys()
    }
    assert workstation["set-resource-scopes"]["gpu"] == "local", "a global gpu limit would serialise cluster GPU jobs"


def test_profile_plans_without_a_cluster(tmp_path):
    # model.device=cuda: every rule that runs a model declares gpu=1 whether or not the profile lists it
    result = snakemake(tmp_path, "-n", "--directory", str(tmp_path), "--config", "model__device=cuda")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "workflow specific profile" in result.stderr  # profiles/default comes along
    jobs = planned_resources(result.stdout)
    assert {rule for rule, _ in jobs} >= {"prepare_dataset", "embed_images", "perturbation_stats", "explain_maps"}
    planted = snakemake(
        tmp_path, "-n", "--directory", str(tmp_path), "--config", "dataset=planted", "model=planted_clip", "model__device=cuda"
    )
    assert planted.returncode == 0, planted.stderr[-4000:]
    jobs += planned_resources(planted.stdout)  # the ground-truth rules
    gpu_rules = {rule for rule, resources in jobs if resources.get("gpu") == "1"}
    assert gpu_rules == GPU_RULES, "every rule declaring gpu=1 needs GPU cluster resources in profiles/slurm, and only those"
    assert set(SETTINGS["set-threads"]) == GPU_RULES, "a GPU job asks for its threads whatever the submitting machine has"
    for rule, resources in jobs:
        assert resources["slurm_partition"] == (GPU_PARTITION if rule in GPU_RULES else CPU_PARTITION), rule
        assert resources["slurm_account"] == ACCOUNT and "runtime" in resources and "mem_mb" in resources, rule
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


def test_profile_groups_small_cpu_jobs_per_model(tmp_path):
    """Per model, the statistics and their figures are one SLURM job, and so are the TEXTSPAN labels and
    their property matching; nothing else is grouped."""
    result = snakemake(tmp_path, "-n", "--config", "model=tiny_random", "models=[tiny_random_resnet]")
    assert result.returncode == 0, result.stderr[-4000:]
    lines = {"perturbation_tables": ["perturbation_figures", "perturbation_stats"]}
    lines["head_tables"] = ["head_properties", "textspan_heads"]
    expected = {f"{line}_tiny_random": [(rule, "tiny_random") for rule in rules] for line, rules in lines.items()}
    expected["perturbation_tables_tiny_random_resnet"] = [(rule, "tiny_random_resnet") for rule in lines["perturbation_tables"]]
    assert planned_groups(result.stdout) == expected  # the ResNet has no head decomposition
    grouped = {rule for rules in lines.values() for rule in rules}
    assert not grouped & GPU_RULES, "a group of CPU jobs must not take a GPU job's partition"


def calls(state: Path, tool: str) -> list[dict]:
    lines = (state / "calls.jsonl").read_text().splitlines()
    return [call for call in map(json.loads, lines) if call["tool"] == tool]


def option(args: list[str], name: str) -> str | None:
    """The value of ``name`` in a command line: `name value` or `name=value`."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


@pytest.mark.slow
def test_workflow_runs_through_the_slurm_plugin(tmp_path):
    state, workdir = tmp_path / "slurm", tmp_path / "run"
    state.mkdir()
    workdir.mkdir()
    # A small part of the workflow (each cluster job starts Snakemake twice): GPU and CPU rules, a group, 4 DAG levels.
    results = "results/{}/model=tiny_random/dataset=skimage_samples/{}"
    targets = [results.format("summary", "summary.json"), results.format("interpret", "head_labels.csv")]
    env = {"PATH": f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_DIR": str(state), "FAKE_SLURM_ACCOUNTS": ACCOUNT}
    fast = ["--jobs", "2", "--prioritize", targets[0], "--slurm-init-seconds-before-status-checks", "1"]  # 3 waves of jobs
    result = snakemake(workdir, *fast, *targets, "--config", *SMOKE, env=env)
    job_logs = "".join(p.read_text()[-3000:] for p in (workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert result.returncode == 0, f"{result.stderr[-5000:]}\n{job_logs}"

    assert '"images_embedded": 12' in (workdir / targets[0]).read_text()
    assert len(pd.read_csv(workdir / targets[1])) > 0

    submitted = calls(state, "sbatch")
    group = "head_tables_tiny_random"  # textspan_heads, then head_properties: one SLURM job
    comments = {call["job"]: option(call["args"], "--comment") for call in submitted}
    rules = {
        job: group if comment.startswith(f"rule_{group}") else re.match(r"rule_(\w+?)(_wildcards_|$)", comment)[1]
        for job, comment in comments.items()
    }
    model_jobs = ["decompose_images", "embed_images", "embed_labels", "embed_properties", "embed_text_pool"]
    assert sorted(rules.values()) == sorted([*model_jobs, group, "prepare_dataset", "summarise_embeddings"])
    (group_call,) = [call for call in submitted if rules[call["job"]] == group]
    runtime, memory = SETTINGS["default-resources"]["runtime"], SETTINGS["default-resources"]["mem_mb"]
    assert option(group_call["args"], "-t") == str(2 * runtime), "two jobs in a row: the sum of their run times"
    assert option(group_call["args"], "--mem") == str(memory), "one job at a time: the memory of one"
    steps = {call["job"]: call["args"] for call in calls(state, "srun")}
    assert steps.keys() == rules.keys()  # every job ran its step through srun
    for call in submitted:
        args, rule = call["args"], rules[call["job"]]
        assert "--parsable" in args and option(args, "-A") == ACCOUNT, rule
        assert Path(option(args, "-D")) == workdir.resolve(), rule
        if rule in GPU_RULES:
            assert option(args, "--gpus") == "1" and option(steps[call["job"]], "--gpus") == "1", rule
            assert option(args, "-p") == GPU_PARTITION, rule
        else:
            assert not any(re.match(r"--(gpus|gres)\b", arg) for arg in args + steps[call["job"]]), rule
            assert option(args, "-p") == CPU_PARTITION and option(args, "--ntasks") == "1", rule

    # The workstation's gpu=1 limit (profiles/default, scope local) must not serialise cluster jobs.
    gpu_jobs = [call for call in submitted if rules[call["job"]] in GPU_RULES]
    spans = [(call["time"], (state / "jobs" / f"{call['job']}.rc").stat().st_mtime) for call in gpu_jobs]
    assert any(
        start_b < end_a and start_a < end_b for i, (start_a, end_a) in enumerate(spans) for start_b, end_b in spans[i + 1 :]
    )
