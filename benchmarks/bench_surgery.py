"""CLIP Surgery map throughput vs a plain image forward pass, on the same device and batch size.

    python benchmarks/bench_surgery.py [--arch cliplens-tiny-vit|cliplens-tiny-rn|ViT-B-32|ViT-B-16|RN50]
        [--prompts 1 10 80] [--batch-size 32] [--batches 2] [--depth 6] [--render image|grid]

Images/second for: `model.encode_image` on normalised batches in memory (the baseline), and
`cliplens.explain.surgery.explain` producing surgery maps for K prompts (K = 1: single-prompt form
against the empty prompt; K > 1: label-set feature surgery), rendered at the image size
(`--render image`) or left on the patch grid (`--render grid`). Text features are random unit
vectors: texts are encoded once per run by the caller, so they are no part of the per-batch cost.
Weights are random (open_clip architecture, seeded); throughput does not depend on them.
On a shared CPU, `--clock cpu --threads 1` times process CPU time (robust to other load).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, hardware, write_table  # noqa: E402

from cliplens.explain.surgery import explain, image_tokens_and_grid
from cliplens.models import TINY_ARCHS, autocast, create_tiny_clip  # noqa: E402
from cliplens.runtime import resolve_device  # noqa: E402


def build_model(arch: str, device: torch.device) -> torch.nn.Module:
    """A seeded random-weight model of an open_clip architecture (or a cliplens tiny one)."""
    tiny = {name: kind for kind, name in TINY_ARCHS.items()}
    if arch in tiny:
        return create_tiny_clip(tiny[arch], seed=0).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return open_clip.create_model(arch, pretrained=None).eval().to(device)


def measure(args: argparse.Namespace) -> list[dict]:
    device = resolve_device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        raise SystemExit("--clock cpu times CPU work only; use --clock wall on an accelerator")
    model = build_model(args.arch, device).requires_grad_(False)
    image_size = open_clip.get_model_preprocess_cfg(model)["size"]
    image_hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(args.batch_size, 3, *image_hw, generator=generator).to(device) for _ in range(args.batches)]
    with torch.inference_mode():
        embed_dim, grid_hw = (lambda t: (t[0].shape[-1], t[1]))(image_tokens_and_grid(model, batches[0][:1], 0))
    texts = F.normalize(torch.randn(max(args.prompts), embed_dim, generator=generator), dim=-1).to(device)
    empty = F.normalize(torch.randn(embed_dim, generator=generator), dim=-1).to(device)
    out_hw = image_hw if args.render == "image" else grid_hw
    images = args.batch_size * args.batches

    def encode_image() -> None:
        with torch.inference_mode(), autocast(device, args.precision):
            for batch in batches:
                model.encode_image(batch)

    def surgery_maps(prompts: int) -> None:
        with autocast(device, args.precision):
            for batch in batches:
                explain(model, batch, texts[:prompts], empty, depth=args.depth, out_hw=out_hw)

    rows = []
    for prompts in args.prompts:  # the baseline is re-timed next to each row: shared CPUs drift
        baseline = images / best_of(args.repeats, encode_image, args.clock)
        throughput = images / best_of(args.repeats, lambda: surgery_maps(prompts), args.clock)
        rows.append(
            {
                "arch": args.arch,
                "device": str(device),
                "precision": args.precision,
                "clock": args.clock,
                "batch_size": args.batch_size,
                "image_size": "x".join(map(str, image_hw)),
                "map_size": "x".join(map(str, out_hw)),
                "prompts": prompts,
                "feature_surgery": "single_prompt" if prompts == 1 else "label_set",
                "encode_image_img_s": baseline,
                "surgery_img_s": throughput,
                "ratio": throughput / baseline,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="cliplens-tiny-vit", help="open_clip architecture, random weights")
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 10, 80])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--render", default="image", choices=["image", "grid"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: process CPU time")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default="benchmarks/out/surgery.csv")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(args)
    print(f"hardware: {hardware()}\n")
    print(write_table(rows, args.out))


if __name__ == "__main__":
    main()
