"""The layout's rules, checked by parsing: a shared core, three sibling lines, one script per rule, self-contained docs."""

from __future__ import annotations

import ast
import re

import pytest
from conftest import ROOT

PACKAGE = ROOT / "src" / "cliplens"
LINES = ("perturbation", "explain", "interpret")
APPLICATIONS = ("cli", "explore")
"""Application layers above the lines (the command line, the explorer): they may import every line."""


def module_of(path) -> str:
    parts = path.relative_to(ROOT / "src").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def cliplens_imports(path) -> set[str]:
    """Every cliplens module a file imports (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cliplens":
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "cliplens")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "cliplens")
    return found


def line_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LINES else None


def application_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in APPLICATIONS else None


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_of(p))
def test_core_imports_no_line_and_lines_import_no_sibling(path):
    own = line_of(module_of(path))
    if application_of(module_of(path)):
        return  # the explorer and the command line sit above the lines
    for imported in cliplens_imports(path):
        other = line_of(imported)
        assert application_of(imported) is None, f"{module_of(path)} imports the application layer {imported}"
        if own is None:
            assert other is None, f"core module {module_of(path)} imports the line {imported}"
        else:
            assert other in (None, own), f"{module_of(path)} imports the sibling line {imported}"


@pytest.mark.parametrize("path", [p for p in MODULES if module_of(p) != "cliplens.cli"], ids=lambda p: module_of(p))
def test_library_never_imports_snakemake(path):
    """The command line alone runs Snakemake (and reads --config pairs with Snakemake's own parser)."""
    imports = {node.names[0].name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import)}
    imports |= {node.module for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(name.split(".")[0] == "snakemake" for name in imports)


def test_every_rule_runs_the_script_named_like_it():
    rules = {}
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for rule, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)+)", smk.read_text(), flags=re.M):
            script = re.search(r'script:\s*\n\s*"([^"]+)"', body)
            if script:
                rules[rule] = script.group(1).rsplit("/", 1)[-1]
    assert rules, "no rule found"
    assert {rule: f"{rule}.py" for rule in rules} == rules
    assert sorted(p.name for p in (ROOT / "scripts").glob("*.py")) == sorted(rules.values()), "a script without a rule"


def test_benchmark_files_all_under_logs_benchmarks():
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for target in re.findall(r'benchmark:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert target.startswith("logs/benchmarks/"), (smk.name, target)


DOCS = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    ROOT / "benchmarks" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
OUTSIDE = re.compile(r"algorithms\.md|shared/docs|(?<![\w.])/(?:work|root|home|tmp|Users|mnt|data|opt|srv)/")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_docs_name_nothing_outside_the_repository(path):
    assert path.exists(), path
    text = path.read_text()
    assert not OUTSIDE.findall(text), f"{path.name} names paths outside the repository: {OUTSIDE.findall(text)[:3]}"
    for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (path.parent / link).exists(), f"{path.name} links to {link}, which is not in the repository"


@pytest.mark.parametrize("path", sorted((ROOT / "src").rglob("*.py")), ids=lambda p: module_of(p))
def test_source_names_no_machine_path(path):
    assert not OUTSIDE.findall(path.read_text()), path
