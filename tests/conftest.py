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
