"""Jobs that only read stored tables start without torch or open_clip (seconds of start-up each), and
no job pays for scipy.stats (0.4 s) until it tests."""

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
]
"""Scripts that read the manifest, embeddings or statistics tables and write tables or plots."""

TABLE_ONLY_MODULES = [
    "cliplens.metrics",
    "cliplens.plotting",
    "cliplens.perturbation.grid",
    "cliplens.perturbation.analysis",
    "cliplens.perturbation.figures",
    "cliplens.perturbation.summary",
    "cliplens.explain.figures",
    "cliplens.interpret.figures",
]


def _heavy_modules_after(code: str) -> list[str]:
    """Which of torch, open_clip, scipy.stats a fresh interpreter has imported after running ``code``."""
    check = code + "\nimport sys\nprint(','.join(m for m in ('torch', 'open_clip', 'scipy.stats') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, check=True)
    return [name for name in result.stdout.strip().split(",") if name]


@pytest.mark.parametrize("script", TABLE_ONLY_SCRIPTS)
def test_table_only_scripts_import_no_torch(script: str) -> None:
    tree = ast.parse((ROOT / "scripts" / f"{script}.py").read_text())
    imports = "\n".join(ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))
    assert _heavy_modules_after(imports) == []


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
