"""Jobs that only read stored tables or maps start without torch or open_clip (seconds of start-up
each), jobs that compute from a stored decomposition without open_clip and torchvision, jobs that
draw perturbed images without open_clip or matplotlib (torchvision only once a family that needs it
runs), no job pays for scipy.stats (0.4 s) until it tests or for Hydra (only planning composes the
config), and planning a run (validating the config, naming the jobs) imports neither open_clip nor
torchvision."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import ROOT

TABLE_ONLY_SCRIPTS = [
    "perturbation_plan",
    "perturbation_stats",
    "perturbation_figures",
    "summarise_embeddings",
    "model_comparison",
    "head_properties",
]
"""Scripts that read the manifest, embeddings or statistics tables and write tables or plots."""

STORED_MAP_SCRIPTS = ["explain_figures", "decomposition_segmentation_evaluation"]
"""Scripts that draw or evaluate stored score maps: numpy renders the maps; no torch."""

STORED_DECOMPOSITION_SCRIPTS = ["textspan_heads", "mean_ablation"]
"""Scripts that compute from a stored decomposition (TEXTSPAN, mean ablation): torch; no model code."""

PERTURBING_SCRIPTS = ["perturbation_galleries"]
"""Scripts that draw images under perturbations: torch perturbs; no model code."""

TABLE_ONLY_MODULES = [
    "cliplens.metrics",
    "cliplens.plotting",
    "cliplens.figure_files",
    "cliplens.sheets",
    "cliplens.perturbation.galleries",
    "cliplens.perturbation.grid",
    "cliplens.perturbation.analysis",
    "cliplens.perturbation.figures",
    "cliplens.perturbation.summary",
    "cliplens.explain.figures",
    "cliplens.stored_maps",
    "cliplens.interpret.figures",
    "cliplens.interpret.labels",
]


HEAVY = ("torch", "torchvision", "open_clip", "scipy.stats", "hydra")
"""Modules a job should import only when it needs them (hydra, 0.2 s: config composition, which only
planning needs)."""


def _heavy_modules_after(code: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of ``heavy`` a fresh interpreter has imported after running ``code``."""
    check = code + f"\nimport sys\nprint(','.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, check=True)
    return [name for name in result.stdout.strip().split(",") if name]


def _imports_of(script: str) -> str:
    tree = ast.parse((ROOT / "scripts" / f"{script}.py").read_text())
    return "\n".join(ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))


@pytest.mark.parametrize("script", TABLE_ONLY_SCRIPTS)
def test_table_only_scripts_import_no_torch(script: str) -> None:
    assert _heavy_modules_after(_imports_of(script)) == []


@pytest.mark.parametrize("script", STORED_MAP_SCRIPTS)
def test_stored_map_scripts_import_no_torch(script: str) -> None:
    assert _heavy_modules_after(_imports_of(script)) == []


@pytest.mark.parametrize("script", STORED_DECOMPOSITION_SCRIPTS)
def test_stored_decomposition_scripts_import_no_model_code(script: str) -> None:
    assert _heavy_modules_after(_imports_of(script)) == ["torch"]


@pytest.mark.parametrize("script", PERTURBING_SCRIPTS)
def test_perturbing_scripts_import_no_open_clip(script: str) -> None:
    assert _heavy_modules_after(_imports_of(script)) == ["torch"]


@pytest.mark.parametrize("script", PERTURBING_SCRIPTS)
def test_picture_sheets_start_without_matplotlib(script: str) -> None:
    """The galleries are Pillow sheets: their job does not import matplotlib (0.4 s)."""
    assert _heavy_modules_after(_imports_of(script), ("matplotlib",)) == []


def test_families_import_torchvision_when_one_needs_it() -> None:
    setup = "import torch\nfrom cliplens.perturbation.families import perturb, resolve_params\nresolve_params('zoom', {})\n"
    images, seeds = "torch.rand(1, 3, 8, 8)", "torch.zeros(1, dtype=torch.int64)"
    assert _heavy_modules_after(setup + f"perturb({images}, 'contrast', 3, {seeds})") == ["torch"]
    assert _heavy_modules_after(setup + f"perturb({images}, 'zoom', 3, {seeds})") == ["torch", "torchvision"]


def test_planning_a_run_imports_neither_open_clip_nor_torchvision() -> None:
    """What the main Snakemake process does before any job: compose and validate the config, decide
    which models the decomposition supports, and whether a model job needs the GPU slot."""
    code = (
        "from pathlib import Path\nfrom cliplens.config import compose_config\nfrom cliplens.planning import decomposable\n"
        "from cliplens.runtime import resolve_device\n"
        "for model in ('tiny_random', 'tiny_random_resnet', 'planted_clip'):\n"
        "    cfg = compose_config(Path('config'), [f'model={model}', 'interpret.queries.heads=[[-1,0]]'])\n"
        "    [decomposable(m) for m in cfg['model_grid'].values()]\n"
        "resolve_device('auto')"
    )
    assert _heavy_modules_after(code) == ["torch", "hydra"]


def test_table_only_library_modules_import_no_torch() -> None:
    assert _heavy_modules_after("\n".join(f"import {module}" for module in TABLE_ONLY_MODULES)) == []


def test_job_logging_caps_threads_without_importing_torch(tmp_path) -> None:
    code = (
        "import os\nfrom cliplens.runtime import job_logging\n"
        f"with job_logging({str(tmp_path / 'job.log')!r}, 3):\n    assert os.environ['OMP_NUM_THREADS'] == '3'"
    )
    assert _heavy_modules_after(code) == []
    capped = "import torch\nfrom cliplens.runtime import job_logging\nwith job_logging(None, 3):\n    assert torch.get_num_threads() == 3"
    assert _heavy_modules_after(capped) == ["torch"]
