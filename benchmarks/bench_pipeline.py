"""End to end: the README's smoke run (``snakemake --cores 2 --config model=tiny_random``) on a fresh copy.

    python benchmarks/bench_pipeline.py [--cores 2] [--out benchmarks/out/pipeline.csv]
    python benchmarks/bench_pipeline.py --existing /some/finished/copy   # analyse a finished run only

The files of the working tree that git tracks or does not ignore are copied to a temporary
directory (no results, logs, data or .snakemake), the workflow runs there, then its report is
built. Printed, and written as CSV (one row per rule plus a total):

- wall time of the run and the CPU time of all its processes;
- a machine unit measured in the same run: seconds of a fixed float32 matmul loop on one thread,
  before and after the run (their mean), so that runs on machines or loads that differ compare;
- the load average before and after (other processes share the cores);
- per rule: jobs, job-seconds (Snakemake's benchmark files, ``s``; rules without one from the run
  log's start and finish times, 1 s resolution), CPU seconds (the last line of each job's log,
  ``cliplens.runtime.resources_used``: start-up included; Snakemake's own ``cpu_time`` samples the
  process at intervals and misses up to the last 30 s of a job), and the estimated start-up: the
  import time of its script measured in a fresh interpreter, times its jobs;
- per rule, the CPU seconds its jobs spent saving figures (layout, drawing, encoding: logged on the
  same line); rules that only draw figures count whole, start-up included;
- the share of figure jobs and of start-up in all job-seconds; the CPU of every figure (the figure
  jobs' CPU plus the saving in the other jobs) as a share of the run's core-seconds (cores x wall);
  and of the run's CPU seconds (which does not depend on the load); the size of the report;
- with ``--without-figures``, the same run again on another fresh copy without the figure jobs
  (``--omit-from``): the difference of the two wall times is what the figures cost the run.
  One pair reads anywhere from 2% to 20% on a 2-core machine whose speed drifts; ``--pairs N``
  times N pairs in alternating order (with, without; without, with; ...) so that a drift
  over the session cancels, and prints each pair, the mean cost and its standard error.
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURE_RULES = {"perturbation_galleries", "perturbation_figures", "explain_figures", "model_comparison"}
"""Rules that only draw figures (other rules draw figures beside their analysis)."""
UNIT_SIZE, UNIT_REPEATS = 1024, 20
LOG_TIME = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")
JOB_START = re.compile(r"^(?:local)?rule (\w+):$")
JOB_ID = re.compile(r"^\s+jobid: (\d+)$")
JOB_END = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")
RESOURCES = re.compile(r"resources used: cpu ([\d.]+) s, peak rss \d+ MB(?:, \d+ figures saved in ([\d.]+) cpu s)?\n?$")
"""The last line of a finished job's log (``cliplens.runtime.RESOURCES_LINE``; older logs lack the figures)."""


def machine_unit() -> float:
    """Seconds of a fixed single-thread float32 matmul loop (a subprocess: this one stays torch-free)."""
    code = (
        f"import time, torch; torch.set_num_threads(1); a = torch.rand({UNIT_SIZE}, {UNIT_SIZE}); b = a @ a; t = time.perf_counter()\n"
        f"for _ in range({UNIT_REPEATS}): b = a @ a\nprint(time.perf_counter() - t)"
    )
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


NOT_COPIED = {
    "results",
    "logs",
    "data",
    ".snakemake",
    ".venv",
    ".whl",
    ".site",
    ".gl",
    ".git",
    "benchmarks/out",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
}
"""Paths under the root that a copy of a tree without git leaves out (outputs, environments, wheels; as
.gitignore, which the copy cannot ask git about)."""


def _not_copied(folder: str, names: list[str]) -> set[str]:
    """``shutil.copytree``'s ignore: :data:`NOT_COPIED` (relative to the root) and caches anywhere."""
    relative = Path(folder).relative_to(ROOT)
    return {
        name
        for name in names
        if (relative / name).as_posix() in NOT_COPIED or name == "__pycache__" or name.endswith(".egg-info")
    }


def fresh_copy(destination: Path) -> Path:
    """The working tree's tracked and not-ignored files, copied to ``destination`` (without git, as on
    a machine that received a copy of the tree: everything but :data:`NOT_COPIED`)."""
    if not (ROOT / ".git").exists():
        shutil.copytree(ROOT, destination, ignore=_not_copied, dirs_exist_ok=True)
        return destination
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            target = destination / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def run_log(workdir: Path) -> Path:
    """The newest Snakemake log of ``workdir`` that ran jobs (building a report writes one too)."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"), reverse=True)
    return next(log for log in logs if "Finished jobid" in log.read_text())


def job_times(log: Path) -> tuple[dict[int, tuple[str, float]], float]:
    """Per job id: (rule, seconds from its start to its finish line) from a Snakemake run log; and the
    seconds from the log's first to its last timestamp."""
    starts: dict[int, tuple[str, datetime]] = {}
    done: dict[int, tuple[str, float]] = {}
    stamps: list[datetime] = []
    rule = None
    for line in log.read_text().splitlines():
        if match := LOG_TIME.match(line):
            stamps.append(datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y"))
        elif match := JOB_START.match(line):
            rule = match.group(1)
        elif (match := JOB_ID.match(line)) and rule is not None:
            starts[int(match.group(1))] = (rule, stamps[-1])
            rule = None
        elif match := JOB_END.match(line):
            job = int(match.group(1))
            if job in starts:
                done[job] = (match.group(2), (stamps[-1] - starts[job][1]).total_seconds())
    return done, (stamps[-1] - stamps[0]).total_seconds() if stamps else 0.0


def benchmark_seconds(workdir: Path) -> dict[str, list[float]]:
    """Per rule: the wall seconds of each job that has a Snakemake benchmark file."""
    found: dict[str, list[float]] = defaultdict(list)
    for tsv in (workdir / "logs" / "benchmarks").rglob("*.tsv"):
        rule = tsv.relative_to(workdir / "logs" / "benchmarks").parts[0]
        with open(tsv) as handle:
            found[rule].extend(float(row["s"]) for row in csv.DictReader(handle, delimiter="\t"))
    return found


def logged_cpu_seconds(workdir: Path) -> dict[str, list[tuple[float, float]]]:
    """Per rule: (CPU seconds, of which saving figures) that each finished job logged as its last
    line (``resources_used``)."""
    found: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for log in (workdir / "logs").rglob("*.log"):
        if (match := RESOURCES.search(log.read_text())) is not None:
            rule = Path(log.relative_to(workdir / "logs").parts[0]).stem  # logs/<rule>/... or logs/<rule>.log
            found[rule].append((float(match[1]), float(match[2] or 0)))
    return found


def copy_env(workdir: Path) -> dict[str, str]:
    """The environment of a command run in the copy ``workdir``: its own package sources first."""
    paths = [str(workdir / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def import_seconds(script: Path) -> float:
    """Wall seconds of a fresh interpreter importing what ``script`` imports at its top."""
    tree = ast.parse(script.read_text())
    imports = [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "\n".join(imports)], check=True, env=copy_env(script.parents[1]), capture_output=True)
    return time.perf_counter() - start


def analyse(workdir: Path) -> list[dict]:
    """One row per rule of the latest run in ``workdir``: jobs, job-seconds, CPU seconds, start-up."""
    jobs, _ = job_times(run_log(workdir))
    measured, cpu = benchmark_seconds(workdir), logged_cpu_seconds(workdir)
    per_rule: dict[str, list[float]] = defaultdict(list)
    for rule, job_seconds in jobs.values():
        per_rule[rule].append(job_seconds)
    rows = []
    for rule in sorted(set(per_rule) - {"all"}):
        from_benchmarks = rule in measured and len(measured[rule]) == len(per_rule[rule])
        seconds = measured[rule] if from_benchmarks else per_rule[rule]
        script = workdir / "scripts" / f"{rule}.py"
        startup = import_seconds(script) if script.is_file() else 0.0
        logged = len(cpu[rule]) == len(seconds)
        rows.append(
            {
                "rule": rule,
                "jobs": len(seconds),
                "job_s": round(sum(seconds), 1),
                "cpu_s": round(sum(c for c, _ in cpu[rule]), 1) if logged else "",
                "saving_figures_cpu_s": round(sum(f for _, f in cpu[rule]), 1) if logged else "",
                "source": "benchmark" if from_benchmarks else "log",
                "startup_s": round(startup * len(seconds), 1),
                "figures": rule in FIGURE_RULES,
            }
        )
    return rows


def timed_run(workdir: Path, cores: int, config: list[str], *extra: str) -> tuple[float, float]:
    """Run the workflow in ``workdir``; its wall seconds and the CPU seconds of all its processes."""
    children = os.times()
    start = time.perf_counter()
    command = [sys.executable, "-m", "snakemake", "--cores", str(cores), *extra, "--config", *config]
    run = subprocess.run(command, cwd=workdir, env=copy_env(workdir), capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = os.times()
    if run.returncode != 0:
        sys.exit(f"the run failed in {workdir}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return wall, (after.children_user - children.children_user) + (after.children_system - children.children_system)


def timed_once(cores: int, config: list[str], *extra: str) -> float:
    """Wall seconds of one run on a fresh copy of the working tree (removed afterwards)."""
    workdir = fresh_copy(Path(tempfile.mkdtemp(prefix="cliplens-e2e-pair-")))
    try:
        return timed_run(workdir, cores, config, *extra)[0]
    finally:
        shutil.rmtree(workdir)


def timed_pairs(
    first_wall: float, count: int, cores: int, config: list[str], figure_rules: list[str]
) -> list[tuple[float, float]]:
    """``count`` pairs (wall with the figure jobs, wall without them); the first pair's run with them
    is ``first_wall``. Pairs alternate their order (with first, then without first) so that a
    machine that speeds up or slows down over the session biases neither side."""
    without = ("--omit-from", *figure_rules)
    pairs = []
    for index in range(count):
        if index == 0:
            pairs.append((first_wall, timed_once(cores, config, *without)))
        elif index % 2:
            bare = timed_once(cores, config, *without)
            pairs.append((timed_once(cores, config), bare))
        else:
            full = timed_once(cores, config)
            pairs.append((full, timed_once(cores, config, *without)))
    return pairs


def figure_cost(pairs: list[tuple[float, float]]) -> str:
    """Each pair's cost of the figures and, over several, the mean share with its standard error."""
    lines = [
        f"pair {i}: wall {full:.1f} s, without the figure jobs {bare:.1f} s: the figures cost {full - bare:.1f} s "
        f"= {(full - bare) / full:.0%} of the run's wall time"
        for i, (full, bare) in enumerate(pairs, 1)
    ]
    if len(pairs) > 1:
        shares = [(full - bare) / full for full, bare in pairs]
        mean = sum(shares) / len(shares)
        error = (sum((share - mean) ** 2 for share in shares) / (len(shares) - 1) / len(shares)) ** 0.5
        costs = [full - bare for full, bare in pairs]
        lines.append(
            f"over {len(pairs)} pairs: the figures cost {sum(costs) / len(costs):.1f} s, "
            f"{mean:.1%} +- {error:.1%} (standard error) of the run's wall time"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=2, help="with --existing: the cores that run had")
    parser.add_argument("--config", nargs="*", default=["model=tiny_random"], help="--config of the run (README smoke run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/pipeline.csv"))
    parser.add_argument("--existing", type=Path, help="analyse a finished run in this directory instead of running")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    parser.add_argument(
        "--without-figures", action="store_true", help="also time the run without the figure jobs on another fresh copy"
    )
    parser.add_argument("--pairs", type=int, default=1, help="with --without-figures: time this many pairs, alternating")
    args = parser.parse_args()
    if args.pairs < 1 or (args.pairs > 1 and (not args.without_figures or args.existing)):
        parser.error("--pairs N: N >= 1; more than one pair needs --without-figures and a run of its own (no --existing)")

    load_before = os.getloadavg()
    unit_before = machine_unit()
    workdir = args.existing or fresh_copy(Path(tempfile.mkdtemp(prefix="cliplens-e2e-")))
    wall = cpu = without_figures = None
    if args.existing is None:
        wall, cpu = timed_run(workdir, args.cores, args.config)
    else:
        _, wall = job_times(run_log(workdir))
    rows = analyse(workdir)
    pairs: list[tuple[float, float]] = []
    if args.without_figures:  # the figure rules this run had (a name Snakemake does not know it ignores)
        figure_rules = sorted(r["rule"] for r in rows if r["figures"])
        pairs = timed_pairs(wall, args.pairs, args.cores, args.config, figure_rules)
        without_figures = pairs[0][1]
    report = workdir / "results" / "report.html"
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "snakemake", "--report", str(report), "--config", *args.config],
        cwd=workdir,
        env=copy_env(workdir),
        capture_output=True,
        check=True,
    )
    report_s = time.perf_counter() - start
    unit = (unit_before + machine_unit()) / 2
    load_after = os.getloadavg()

    total = sum(r["job_s"] for r in rows)
    figures = sum(r["job_s"] for r in rows if r["figures"])
    unlogged = [r["rule"] for r in rows if r["figures"] and r["cpu_s"] == ""]
    figure_cpu = sum(r["cpu_s"] for r in rows if r["figures"] and r["rule"] not in unlogged)
    saving_elsewhere = sum(r["saving_figures_cpu_s"] or 0 for r in rows if not r["figures"])
    startup = sum(r["startup_s"] for r in rows)
    summary = {
        "rule": "TOTAL",
        "jobs": sum(r["jobs"] for r in rows),
        "job_s": round(total, 1),
        "cpu_s": round(cpu, 1) if cpu is not None else "",
        "saving_figures_cpu_s": round(sum(r["saving_figures_cpu_s"] or 0 for r in rows), 1),
        "source": f"wall {wall:.1f} s",
        "startup_s": round(startup, 1),
        "figures": f"{figures / total:.0%} of job-s",
        "wall_without_figures_s": round(without_figures, 1) if without_figures is not None else "",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(summary), restval="")
        writer.writeheader()
        writer.writerows([*rows, summary])
    print(f"workdir: {workdir}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    print(
        f"machine unit: {unit:.2f} s ({UNIT_REPEATS} float32 {UNIT_SIZE}x{UNIT_SIZE} matmuls, 1 thread; before {unit_before:.2f})"
    )
    print()
    print("| rule | jobs | job-seconds | CPU seconds | of which saving figures | source | start-up (est.) | figure job |")
    print("|---|---|---|---|---|---|---|---|")
    for row in [*rows, summary]:
        print("| " + " | ".join(str(value) for key, value in row.items() if key != "wall_without_figures_s") + " |")
    print()
    print(
        f"wall {wall:.1f} s = {wall / unit:.0f} machine units; job-seconds {total:.1f}; "
        f"figure jobs {figures / total:.0%}; start-up {startup / total:.0%} (estimated); "
        f"report {report.stat().st_size / 1e6:.1f} MB in {report_s:.1f} s"
    )
    print(
        f"figure jobs: {figure_cpu:.1f} CPU s (logged by the jobs) = {figure_cpu / (args.cores * wall):.0%} "
        f"of the run's {args.cores} x {wall:.1f} core-seconds"
        + (f" (WARNING: no CPU logged by every job of {', '.join(unlogged)}: left out)" if unlogged else "")
    )
    every_figure = figure_cpu + saving_elsewhere
    jobs_cpu = sum(r["cpu_s"] or 0 for r in rows)
    run_cpu, run_cpu_source = (cpu, "all its processes") if cpu else (jobs_cpu, "its jobs, as logged")
    print(
        f"every figure: {every_figure:.1f} CPU s (the figure jobs' {figure_cpu:.1f} s + {saving_elsewhere:.1f} s saving "
        f"figures in the other jobs) = {every_figure / (args.cores * wall):.0%} of the run's core-seconds, "
        f"{every_figure / run_cpu:.0%} of its {run_cpu:.1f} CPU s ({run_cpu_source}; other load does not change this share)"
    )
    if pairs:
        print(figure_cost(pairs))
    if args.existing is None and not args.keep:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
