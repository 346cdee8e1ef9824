"""Throughput of ``cliplens.perturbation.families.perturb`` against the ``imagecorruptions`` package.

Both backends see the same 224x224 photos (scikit-image samples) at the same severities.
``perturb`` runs on whole batches (CPU, and CUDA when available) of the input the embedding step
hands each family: the decoded 8-bit pixels (channels-last memory, as the loader yields them) for
families that read bytes (JPEG), else [0, 1] floats (converted once per batch, shared by every
cell of the grid); imagecorruptions runs one uint8 image at a time, timed on ``corrupt()`` alone.
Prints a Markdown table and writes a CSV.

    python benchmarks/bench_perturb.py --out benchmarks/out/perturb.csv
    python benchmarks/bench_perturb.py --threads 1 --clock cpu --all-families   # shared machine
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from skimage import data
from skimage.transform import resize

sys.path.insert(0, str(Path(__file__).parent))
from _common import CLOCKS, best_of, hardware, write_table  # noqa: E402

from cliplens.perturbation.families import FAMILIES, image_seeds, perturb
from cliplens.pixels import unit_pixels

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry")


def photos(count: int, size: int) -> np.ndarray:
    """``count`` uint8 [N, size, size, 3] photos, cycling through scikit-image's samples."""
    images = [(resize(getattr(data, name)(), (size, size), anti_aliasing=True) * 255).round() for name in PHOTOS]
    return np.stack([images[i % len(images)] for i in range(count)]).astype(np.uint8)


def reference_rate(pixels: np.ndarray, name: str, severity: int, repeats: int, clock: str) -> float:
    """Images per second of imagecorruptions' ``corrupt`` over ``pixels``, best of ``repeats``."""
    from imagecorruptions import corrupt

    np.random.seed(0)
    seconds = best_of(repeats, lambda: [corrupt(image, corruption_name=name, severity=severity) for image in pixels], clock)
    return len(pixels) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/perturb.csv"))
    parser.add_argument("--families", nargs="*", help="default: every family imagecorruptions also has")
    parser.add_argument("--all-families", action="store_true", help="also time the torch-only families")
    parser.add_argument("--severities", type=int, nargs="*", default=[1, 3, 5])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--reference-images", type=int, default=8, help="images per imagecorruptions timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (steadier on a shared machine, "
        "but it sums threads, so use it with --threads 1)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    shared = [f.name for f in FAMILIES.values() if f.imagecorruptions_name]
    families = args.families or (list(FAMILIES) if args.all_families else shared)
    pixels = photos(args.batch_size, args.size)
    eight_bit = torch.from_numpy(pixels).permute(0, 3, 1, 2)  # [B, 3, H, W], channels-last memory
    clean = unit_pixels(eight_bit)
    masks = torch.zeros(clean.shape[0], args.size, args.size, dtype=torch.bool)
    masks[:, args.size // 4 : 3 * args.size // 4, args.size // 4 : 3 * args.size // 4] = True
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    rows = []
    for family in families:
        name = FAMILIES[family].imagecorruptions_name
        for severity in args.severities:
            reference = (
                reference_rate(pixels[: args.reference_images], name, severity, args.repeats, args.clock) if name else None
            )
            for device in devices:
                images = (eight_bit if FAMILIES[family].reads_bytes else clean).to(device)
                image_masks = masks.to(device)
                seeds = image_seeds([str(i) for i in range(len(images))], family, severity, 0).to(device)
                seconds = best_of(args.repeats, lambda: perturb(images, family, severity, seeds, masks=image_masks), args.clock)
                rate = len(images) / seconds
                rows.append(
                    {
                        "family": family,
                        "device": device,
                        "threads": args.threads if device == "cpu" else "",
                        "clock": args.clock,
                        "severity": severity,
                        "torch_img_s": round(rate),
                        "imagecorruptions_img_s": round(reference) if reference else "",
                        "speedup": round(rate / reference, 1) if reference else "",
                    }
                )
                print(" ".join(f"{key}={value}" for key, value in rows[-1].items()), flush=True)

    print(f"\nhardware: {hardware()}\n")
    print(write_table(rows, args.out))
    speedups = [row["speedup"] for row in rows if row["speedup"] != "" and row["device"] == "cpu"]
    if speedups:
        print(
            f"\nCPU speedup over imagecorruptions: median {statistics.median(speedups):.1f}x, "
            f"min {min(speedups):.1f}x ({len(speedups)} family x severity points)"
        )
    print(f"CSV: {args.out}")


if __name__ == "__main__":
    main()
