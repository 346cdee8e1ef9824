"""Shared fixtures: the repository, the shared datasets, and tiny random CLIP models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("CLIPLENS_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


def shared_dataset(name: str) -> Path:
    """A dataset of the shared mirror (../shared/datasets); skips the test where it is absent."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {path} not available")
    return path


@pytest.fixture(scope="session")
def tiny_model_cfg() -> dict:
    from cliplens.config import compose_config

    return compose_config(ROOT / "config", ["model=tiny_random"])["model"]


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_cfg):
    from cliplens.models import load_model

    return load_model(tiny_model_cfg)


SMOKE_RUN = [
    "model=tiny_random",
    "perturbation=smoke",
    "stats.n_boot=50",
    "explain.max_images=6",
    "interpret.n_boot=50",
    "interpret.max_images=8",
]
"""Hydra overrides of the small finished run of every line that the pipeline, CLI and explorer tests share."""
SMOKE = [key.replace(".", "__") + "=" + value for key, value in (o.split("=", 1) for o in SMOKE_RUN)]
"""The same run as Snakemake ``--config`` pairs."""


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A finished tiny_random run of every line, made by ``cliplens run`` in a fresh folder (do not modify it)."""
    import subprocess
    import sys

    workdir = tmp_path_factory.mktemp("smoke")
    command = [sys.executable, "-m", "cliplens.cli", "run", *SMOKE_RUN, "--", "--cores", "2", "--directory", str(workdir)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir, timeout=1800)
    assert result.returncode == 0, f"cliplens run failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return workdir
