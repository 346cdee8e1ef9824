"""Run every cliplens benchmark and write one table (Markdown + CSV) with the hardware.

    python benchmarks/run_all.py [--quick] [--out benchmarks/out]

Each benchmark script runs in its own process (its peak resident memory is recorded from the
operating system), writes its CSV under --out, and its Markdown table is collected into
RESULTS.md together with the planning time of a large grid (dry run of the workflow). The
end-to-end row runs the README's smoke run on a fresh copy of the repository (bench_pipeline.py).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import hardware  # noqa: E402

from cliplens.perturbation.families import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = {
    "embedding vs bare forward": ["bench_embed.py", "--models", "tiny_random", "vit_b_32_random"],
    "perturbation vs imagecorruptions": ["bench_perturb.py"],
    "surgery maps vs forward": ["bench_surgery.py"],
    "decomposition vs forward": ["bench_decompose.py"],
    "tiny default run end to end (wall, figure and start-up shares)": ["bench_pipeline.py"],
}
QUICK = {
    "embedding vs bare forward": ["--images", "32", "--repeats", "1"],
}
GRID_FAMILIES = 20


def large_grid() -> list[str]:
    """5 models x 20 families x 5 severities over a folder dataset (shards: images / 1000)."""

    families = [name for name, family in FAMILIES.items() if not family.needs_mask][:GRID_FAMILIES]
    return [
        "model=tiny_random",
        "models=[tiny_random_resnet,vit_b_16_openai,vit_l_14_openai,rn50_openai]",
        "dataset=folder",
        "embedding__shard_size=1000",
        "perturbation__families={" + ",".join(f"{name}: {{}}" for name in families) + "}",
    ]


def run_measured(command: list[str], log: Path) -> tuple[int, float, float]:
    """Run a command; return (exit code, wall seconds, peak RSS in MiB of that process)."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss / 1024


def planning_time(out: Path, images: int) -> tuple[float, int]:
    """Seconds to plan (dry run) the large grid over a folder of ``images`` empty files; jobs planned."""
    folder = out / "grid_images"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        (folder / f"{i:06d}.jpg").touch()
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "-q",
        "rules",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(out / "grid_run"),
        "--config",
        *large_grid(),
        f"dataset__path={folder}",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-2000:] + result.stderr[-2000:])
    total = next((line.split()[-1] for line in result.stdout.splitlines() if line.startswith("total")), "0")
    return seconds, int(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/out", type=Path)
    parser.add_argument("--quick", action="store_true", help="smaller runs (minutes, not tens of minutes)")
    parser.add_argument("--grid-images", type=int, default=50_000)
    args = parser.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary, sections = [], [f"# cliplens benchmarks\n\nhardware: {hardware()}\n"]
    for name, (script, *extra) in BENCHMARKS.items():
        csv_path = out / Path(script).with_suffix(".csv").name.replace("bench_", "")
        command = [sys.executable, str(ROOT / "benchmarks" / script), *extra, "--out", str(csv_path)]
        command += QUICK.get(name, []) if args.quick else []
        code, seconds, peak = run_measured(command, out / f"{Path(script).stem}.log")
        summary.append({"benchmark": name, "exit_code": code, "seconds": round(seconds, 1), "peak_rss_mib": round(peak)})
        table = (out / f"{Path(script).stem}.log").read_text()
        sections.append(
            f"## {name}\n\n`{' '.join(command[1:])}`\n\n{table[table.find('|') :].strip() if '|' in table else table[-2000:]}\n"
        )
    seconds, jobs = planning_time(out, args.grid_images)
    summary.append(
        {
            "benchmark": f"plan 5 models x {GRID_FAMILIES} families x 5 severities x {args.grid_images // 1000} shards ({jobs} jobs)",
            "exit_code": 0,
            "seconds": round(seconds, 1),
            "peak_rss_mib": "",
        }
    )
    with open(out / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    lines = ["| benchmark | exit code | seconds | peak RSS (MiB) |", "|---|---|---|---|"]
    lines += [f"| {r['benchmark']} | {r['exit_code']} | {r['seconds']} | {r['peak_rss_mib']} |" for r in summary]
    sections.insert(1, "## Summary\n\n" + "\n".join(lines) + "\n")
    (out / "RESULTS.md").write_text("\n".join(sections))
    print("\n".join(sections))


if __name__ == "__main__":
    main()
