"""The ``cliplens`` command: Hydra overrides into the Snakefile's --config pairs, dry runs, config, list."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import ROOT, SMOKE_RUN
from test_pipeline import planned_jobs, snakemake

from cliplens.cli import main, snakemake_command, snakemake_config
from cliplens.config import compose_config
from cliplens.perturbation.families import FAMILIES

CONFIG = ROOT / "config"


def cliplens(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "cliplens.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900
    )


def test_hydra_overrides_become_the_snakefile_pairs():
    pairs, cfg = snakemake_config(
        CONFIG,
        [
            "model=tiny_random,tiny_random_resnet",
            "perturbation=smoke",
            "perturbation.severities=[1,3]",
            "+perturbation.families.gaussian_blur.sigma=[1,2,3,4,5]",
            "~perturbation.families.rotation",
            "explain.prompts=['a dog, on grass',a cat]",
        ],
    )
    assert pairs[:3] == ["model=tiny_random", "perturbation=smoke", "perturbation__severities=[1, 3]"]
    assert "models=[tiny_random_resnet]" in pairs
    assert sorted(cfg["model_grid"]) == ["tiny_random", "tiny_random_resnet"]
    assert sorted(cfg["perturbation"]["families"]) == ["contrast", "gaussian_blur", "gaussian_noise"]
    assert cfg["perturbation"]["families"]["gaussian_blur"] == {"sigma": [1, 2, 3, 4, 5]}
    assert cfg["explain"]["prompts"] == ["a dog, on grass", "a cat"]
    direct = compose_config(CONFIG, ["model=tiny_random", "models=[tiny_random_resnet]", "perturbation=smoke"], False)
    assert cfg["stats"] == direct["stats"] and cfg["model_grid"] == direct["model_grid"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("perturbation.severitiez=[1]", "perturbation.severitiez"),
        ("stats.n_boot=many", "stats.n_boot"),
        ("model=vit_b_99", "valid: ["),
        ("stats.n_boot=1,2", "only the model group can be swept"),
        ("~stats.n_boot", "n_boot' is a required property"),
        ("stats.n_boot=[", "cannot parse"),
    ],
)
def test_a_bad_override_fails_naming_the_key(override, message, capsys):
    assert main(["config", override]) == 2
    assert message in capsys.readouterr().err


def test_run_refuses_a_bad_override_before_snakemake_starts(tmp_path):
    result = cliplens("run", "model=tiny_random", "perturbation.severities=[1,9]", "--", "-n", cwd=tmp_path)
    assert result.returncode == 2 and "perturbation.severities" in result.stderr
    assert not (tmp_path / ".snakemake").exists()


def test_config_prints_the_resolved_config(capsys):
    assert main(["config", "model=tiny_random", "dataset.num_images=5", "stats.n_boot=70"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["name"] == "tiny_random" and cfg["stats"]["n_boot"] == 70
    assert cfg["dataset"]["num_images"] == 5 and cfg["model_grid"]["tiny_random"]["source"] == "random"


@pytest.mark.parametrize("what", ["models", "datasets", "families", "methods"])
def test_list_gives_one_line_per_choice(what, capsys):
    assert main(["list", what]) == 0
    lines = capsys.readouterr().out.splitlines()
    if what in ("models", "datasets"):  # the default is starred, and a footnote says so
        assert lines.pop() == f"(* the default {what[:-1]})"
        default = {"models": "vit_b_32_openai", "datasets": "skimage_samples"}[what]
        assert [line.split()[0] for line in lines if line.split()[1] == "*"] == [default]
    names = [line.split()[0] for line in lines]
    expected = {
        "models": sorted(p.stem for p in (CONFIG / "model").glob("[!_]*.yaml")),
        "datasets": sorted(p.stem for p in (CONFIG / "dataset").glob("*.yaml")),
        "families": list(FAMILIES),
        "methods": ["raw", "surgery", "gradcam"],
    }[what]
    assert names == expected
    if what == "models":  # a description that wraps in the config file is given whole, up to its full stop
        assert lines[names.index("planted_clip")].endswith("of the planted world (rule train_planted_model).")
    if what == "families":
        blur = lines[names.index("gaussian_blur")]
        assert "sigma: " + ", ".join(map(str, FAMILIES["gaussian_blur"].params["sigma"])) in blur


@pytest.mark.parametrize(
    "child",
    [
        ["sleep", "30"],
        ["sh", "-c", "trap 'exit 1' INT; sleep 30 2>/dev/null & wait"],
    ],  # killed by the signal; exits 1 as snakemake does
    ids=["killed", "exits_1"],
)
def test_ctrl_c_stops_the_run_without_a_traceback(tmp_path, child):
    """Ctrl-C signals the whole foreground process group: cliplens waits for snakemake to stop and exits 130."""
    script = (
        "import signal, sys, cliplens.cli as cli\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # a background job inherits SIGINT ignored
        "cli.snakemake_config = lambda config_dir, overrides: ([], {})\n"
        f"cli.snakemake_command = lambda pairs, args: {child!r}\n"
        "sys.exit(cli.main(['run']))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        # wait for the child to start: the announcement of the command is printed just before
        assert "cliplens: snakemake" in process.stderr.readline()
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # and what the child left behind
    assert process.returncode == 128 + signal.SIGINT
    assert "Traceback" not in err and "interrupted" in err


def test_run_adds_cores_only_when_none_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SNAKEMAKE_PROFILE", raising=False)
    assert snakemake_command(["a=1"], ["-n"])[-4:] == ["--cores", "all", "--config", "a=1"]
    assert "all" not in snakemake_command([], ["--cores", "2"]) and "all" not in snakemake_command([], ["-j4"])
    assert snakemake_command([], ["--profile", "profiles/slurm"])[3:5] == ["--profile", "profiles/slurm"]
    with pytest.raises(ValueError, match="before '--'"):
        snakemake_command([], ["--config", "a=1"])


@pytest.mark.slow
def test_dry_run_equals_the_snakemake_config_dry_run(tmp_path):
    hydra = ["model=tiny_random,tiny_random_resnet", "perturbation=smoke", "~perturbation.families.rotation", "stats.n_boot=60"]
    result = cliplens("run", *hydra, "--", "-n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    families = "perturbation__families={contrast: {}, gaussian_noise: {}}"
    pairs = ["model=tiny_random", "models=[tiny_random_resnet]", "perturbation=smoke", "stats__n_boot=60", families]
    expected = snakemake(tmp_path, "-n", config=pairs)
    jobs = planned_jobs(result.stdout)
    assert jobs and sorted(jobs) == sorted(planned_jobs(expected.stdout))
    assert not any("family=rotation" in wildcards for _, wildcards in jobs)
    assert {"model=tiny_random_resnet" in w for _, w in jobs} == {True, False}


@pytest.mark.slow
def test_rerun_after_a_change_plans_what_snakemake_plans(smoke_run):
    changed = [o for o in SMOKE_RUN if not o.startswith("stats.")] + ["stats.n_boot=60"]
    result = cliplens("run", *changed, "--", "-n", "--directory", str(smoke_run), cwd=smoke_run)
    assert result.returncode == 0, result.stderr[-3000:]
    pairs = [key.replace(".", "__") + "=" + value for key, value in (o.split("=", 1) for o in changed)]
    expected = snakemake(smoke_run, "-n", config=pairs)
    jobs = planned_jobs(result.stdout)
    assert jobs and sorted(jobs) == sorted(planned_jobs(expected.stdout))
    rules = {rule for rule, _ in jobs}
    assert "perturbation_stats" in rules and not rules & {"embed_images", "decompose_images", "explain_maps"}
    unchanged = cliplens("run", *SMOKE_RUN, "--", "-n", "--directory", str(smoke_run), cwd=smoke_run)
    assert unchanged.returncode == 0 and planned_jobs(unchanged.stdout) == []


@pytest.mark.slow
def test_the_report_of_a_run_is_built_with_its_own_overrides(smoke_run, tmp_path):
    """The README's report command: the overrides of the run, then Snakemake's --report."""
    report = tmp_path / "report.html"
    result = cliplens("run", *SMOKE_RUN, "--", "--report", str(report), "--directory", str(smoke_run), cwd=smoke_run)
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "susceptibility_" in html and "preview_" in html
