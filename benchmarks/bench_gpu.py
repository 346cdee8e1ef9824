"""The GPU checks in one run: precision, throughput, perturbations on the device, the tiny run.

    python benchmarks/bench_gpu.py --out benchmarks/out/gpu                       # on a CUDA machine
    python benchmarks/bench_gpu.py --allow-cpu --quick --out /tmp/gpu-smoke       # same steps, CPU, small

1. precision: each model (seeded random weights: no download) embeds the same photos in fp32 on
   the CPU and in fp16 and bf16 (autocast) on the device; the cosine between each image's fp32
   and reduced-precision embedding, its minimum and mean (target: minimum >= 0.999);
2. throughput: images/s of a bare ``encode_image`` loop and of the embedding step (compute, and
   end to end with decoding: ``bench_embed.measure``) per model, batch size and precision;
3. perturbations: every family on the device against imagecorruptions on the CPU
   (``bench_perturb.py --all-families``; target 10x);
4. the tiny default run end to end on a fresh copy (``bench_pipeline.py`` with this machine's cores).

Each step's Markdown table goes to stdout and, with the hardware line, to ``OUT/RESULTS.md``;
a step that fails is reported there and the others still run. Without CUDA the script stops
unless ``--allow-cpu`` is given (then "device" is the CPU and reduced precision falls back to fp32,
so the precision step only checks the plumbing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import hardware, write_table  # noqa: E402
from bench_embed import measure, model_cfg  # noqa: E402
from bench_perturb import photos  # noqa: E402

from cliplens.models import encode_pixels, load_model  # noqa: E402
from cliplens.pixels import unit_pixels  # noqa: E402

HERE = Path(__file__).parent
PRECISIONS = ("fp16", "bf16")
STEPS = ("precision", "throughput", "perturb", "pipeline")


def precision_rows(models: list[str], images: int) -> list[dict]:
    """Per model and reduced precision: cosine of its embeddings with the fp32 CPU ones (min, mean)."""
    pixels = unit_pixels(torch.from_numpy(photos(images, 224)).permute(0, 3, 1, 2))
    rows = []
    for name in models:
        reference = encode_pixels(load_model({**model_cfg(name, "fp32"), "device": "cpu"}), pixels)
        for precision in PRECISIONS:
            loaded = load_model(model_cfg(name, precision))
            reduced = encode_pixels(loaded, pixels.to(loaded.device)).cpu()
            cosine = (reference * reduced).sum(-1).numpy()
            rows.append(
                {
                    "model": name,
                    "device": str(loaded.device),
                    "requested": precision,
                    "precision": loaded.precision,
                    "images": images,
                    "min_cosine": float(np.min(cosine)),
                    "mean_cosine": float(np.mean(cosine)),
                    "target_met": bool(np.min(cosine) >= 0.999) if loaded.precision == precision else "not tested (fp32)",
                }
            )
    return rows


def throughput_rows(models: list[str], batch_sizes: list[int], precisions: list[str], workers: int) -> list[dict]:
    """``bench_embed.measure`` per model, batch size and precision, on twice the batch of images."""
    return [
        measure(name, 2 * batch, batch, workers, precision, 2, None)
        for name in models
        for batch in batch_sizes
        for precision in precisions
    ]


def script_step(script: str, *arguments: str, timeout: float) -> str:
    """Run a benchmark script of this folder and return its output (its error output if it fails);
    stopped after ``timeout`` seconds so that one hung step leaves time for the others."""
    result = subprocess.run([sys.executable, str(HERE / script), *arguments], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{script} exited with {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/gpu"))
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU where there is no CUDA (a smoke test)")
    parser.add_argument("--quick", action="store_true", help="tiny model, small batches, few families, no end-to-end run")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        parser.error("no CUDA device here; --allow-cpu runs the same steps on the CPU")
    if args.quick and "pipeline" in args.steps:
        args.steps.remove("pipeline")  # the end-to-end run has no small version
    models = ["tiny_random"] if args.quick else ["vit_b_32_random", "vit_b_16_random"]
    batch_sizes = [4] if args.quick else [64, 128, 256, 512]
    cores = os.cpu_count() or 2
    perturb_arguments = (
        ["--families", "gaussian_noise", "jpeg_compression", "--severities", "3", "--batch-size", "4"]
        if args.quick
        else ["--all-families", "--severities", "3", "--batch-size", "64", "--repeats", "3"]
    )
    steps: dict[str, Callable[[], str]] = {
        "precision": lambda: write_table(precision_rows(models, 8 if args.quick else 64), args.out / "precision.csv"),
        "throughput": lambda: write_table(
            throughput_rows(models, batch_sizes, ["fp32", "fp16"], min(8, cores)), args.out / "throughput.csv"
        ),
        "perturb": lambda: script_step(
            "bench_perturb.py", *perturb_arguments, "--out", str(args.out / "perturb.csv"), timeout=180
        ),
        "pipeline": lambda: script_step(
            "bench_pipeline.py", "--cores", str(cores), "--out", str(args.out / "pipeline.csv"), timeout=300
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    sections = [f"# GPU checks\n\nhardware: {hardware()}; {cores} CPU cores; {time.strftime('%Y-%m-%d %H:%M %Z')}"]
    for name in args.steps:
        start = time.perf_counter()
        try:
            body = steps[name]()
        except Exception:  # one failing step must not hide the others' numbers
            body = "FAILED:\n\n```\n" + traceback.format_exc()[-3000:] + "\n```"
        sections.append(f"## {name} ({time.perf_counter() - start:.0f} s)\n\n{body}")
        print(sections[-1], flush=True)
        (args.out / "RESULTS.md").write_text("\n\n".join(sections) + "\n")  # after each step: a killed run keeps the rest


if __name__ == "__main__":
    main()
