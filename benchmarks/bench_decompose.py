"""Benchmark the head decomposition: throughput vs a plain encode_image, peak memory vs N.

Usage: python benchmarks/bench_decompose.py [--arch tiny|ViT-B-32] [--batch-size 16]
       [--sizes 64 256 1024] [--out benchmarks/out/decompose.csv]

Models are randomly initialised (weights do not change the cost). Throughput: the variants are
timed in turn (interleaved) ``--repeats`` times after a warm-up; images/s and the cost ratio use
the fastest run, which is the most robust statistic on a shared machine (the median is kept too). Memory: each N streams N synthetic images through
``write_head_contributions`` in a fresh subprocess that reports its peak resident set size
(ru_maxrss) and its RSS before streaming; bounded memory means the peak does not grow with N.
The child runs with MALLOC_MMAP_THRESHOLD_=1 MiB (glibc's adaptive threshold otherwise lets
RSS creep towards a plateau independent of N).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import torch

from cliplens.interpret.contributions import write_head_contributions
from cliplens.interpret.decompose import decompose
from cliplens.models import create_tiny_clip


def build_model(arch: str) -> torch.nn.Module:
    """The tiny test ViT or an open_clip architecture with random weights, in eval mode."""
    if arch == "tiny":
        return create_tiny_clip("vit", seed=0)
    import open_clip

    torch.manual_seed(0)
    return open_clip.create_model(arch, pretrained=None).eval()


def image_size(model: torch.nn.Module) -> int:
    return model.visual.image_size[0]


def step_times(steps: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Sorted wall times of each step; steps are interleaved so that load drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm-up
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(values) for name, values in times.items()}


def throughput_rows(model: torch.nn.Module, arch: str, batch: int, repeats: int) -> list[dict]:
    images = torch.randn(batch, 3, image_size(model), image_size(model), generator=torch.Generator().manual_seed(0))

    def encode() -> torch.Tensor:
        with torch.inference_mode():
            return model.encode_image(images)

    variants = {
        "encode_image": encode,
        "decompose": lambda: decompose(model, images),
        "decompose+tokens(4 layers)": lambda: decompose(model, images, tokens=True, last_layers=4),
    }
    times = step_times(variants, repeats)
    fastest = {name: values[0] for name, values in times.items()}
    return [
        {
            "benchmark": "throughput",
            "arch": arch,
            "variant": name,
            "batch": batch,
            "n_images": batch,
            "seconds_min": values[0],
            "seconds_median": values[len(values) // 2],
            "images_per_s": batch / values[0],
            "cost_vs_encode": values[0] / fastest["encode_image"],
        }
        for name, values in times.items()
    ]


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child_memory(arch: str, n_images: int, batch: int) -> dict:
    """Stream N images through write_head_contributions; report RSS before and peak RSS (MB)."""
    model = build_model(arch)
    size = image_size(model)

    def batches() -> Iterator[tuple[list[str], torch.Tensor]]:
        for start in range(0, n_images, batch):
            count = min(batch, n_images - start)
            generator = torch.Generator().manual_seed(start)
            yield [f"img{start + i:07d}" for i in range(count)], torch.randn(count, 3, size, size, generator=generator)

    decompose(model, next(batches())[1])  # warm-up: allocator pools exist before the baseline
    before = rss_mb()
    with tempfile.TemporaryDirectory() as out:
        write_head_contributions(batches(), model, out, layers=4, rows_per_shard=batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    return {"rss_before_mb": before, "peak_rss_mb": peak}


def memory_rows(arch: str, sizes: list[int], batch: int, threads: int) -> list[dict]:
    rows = []
    for n_images in sizes:
        command = [
            sys.executable,
            __file__,
            "--child-memory",
            str(n_images),
            "--arch",
            arch,
            "--batch-size",
            str(batch),
            "--threads",
            str(threads),
        ]
        # a fixed mmap threshold stops glibc from keeping freed batch buffers on its heap, which
        # otherwise makes RSS creep up to a plateau that has nothing to do with N
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
        completed = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        result = json.loads(completed.stdout.splitlines()[-1])
        rows.append(
            {
                "benchmark": "memory",
                "arch": arch,
                "variant": "write_head_contributions",
                "batch": batch,
                "n_images": n_images,
                **result,
                "peak_minus_before_mb": result["peak_rss_mb"] - result["rss_before_mb"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tiny", help="'tiny' (4x4 test ViT) or an open_clip ViT name, e.g. ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/decompose.csv"))
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child_memory is not None:
        print(json.dumps(child_memory(args.arch, args.child_memory, args.batch_size)))
        return
    model = build_model(args.arch)
    table = pd.DataFrame(
        throughput_rows(model, args.arch, args.batch_size, args.repeats)
        + memory_rows(args.arch, args.sizes, args.batch_size, args.threads)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    for benchmark, rows in table.groupby("benchmark", sort=False):
        print(
            f"\n### {benchmark} ({args.arch}, {torch.get_num_threads()} threads, {'cuda' if torch.cuda.is_available() else 'cpu'})\n"
        )
        print(rows.dropna(axis=1, how="all").drop(columns=["benchmark"]).to_markdown(index=False, floatfmt=".3f"))
    print(f"\nCSV: {args.out}")


if __name__ == "__main__":
    main()
