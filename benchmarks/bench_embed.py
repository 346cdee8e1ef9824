"""Embedding-step throughput vs a bare open_clip forward loop over the same preprocessed batches.

    python benchmarks/bench_embed.py [--model tiny_random|vit_b_32_random] [--images 64] [--batch-size 32]

Three numbers per configuration, all in images/second on the same device and batch size:
- bare: `model.encode_image` on pre-normalised batches already in memory (the ceiling);
- step compute: cliplens' conversion to [0, 1] floats, encode + Parquet write on the same
  in-memory batches, held as the loader yields them (8-bit);
- step end-to-end: the whole embedding job (decode, resize, DataLoader, encode, write).
With --families, the step also perturbs every batch (severity 3) before encoding it (JPEG on the
bytes, as the embedding step does).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, hardware, write_table  # noqa: E402

from cliplens.datasets import prepare  # noqa: E402
from cliplens.images import iterate_batches, pixel_transform
from cliplens.io import IMAGE_FIELDS, EmbeddingWriter, embedding_schema
from cliplens.models import (
    encode_pixels,
    load_model,  # noqa: E402
)
from cliplens.perturbation.embedding import extract_image_embeddings
from cliplens.perturbation.grid import CLEAN_SPEC, PerturbationSpec, apply_spec, family_inputs
from cliplens.pixels import unit_pixels

MODELS = {
    "tiny_random": {"arch": "cliplens-tiny-vit"},
    "vit_b_32_random": {"arch": "ViT-B-32"},
    "vit_b_16_random": {"arch": "ViT-B-16"},
}


def model_cfg(name: str, precision: str) -> dict:
    return {"name": name, "source": "random", "seed": 0, "device": "auto", "precision": precision, **MODELS[name]}


def measure(name: str, images: int, batch_size: int, workers: int, precision: str, repeats: int, family: str | None) -> dict:
    loaded = load_model(model_cfg(name, precision))
    spec = PerturbationSpec(family, 3, 0) if family else CLEAN_SPEC
    with tempfile.TemporaryDirectory() as tmp:
        manifest, _ = prepare({"kind": "skimage"}, Path(tmp) / "data")
        rows = manifest.iloc[[i % len(manifest) for i in range(images)]].reset_index(drop=True)
        transform = pixel_transform(loaded)
        loader = iterate_batches(rows, transform, loaded.image_size, batch_size, 0, loaded.device, eight_bit=True)
        batches = [p for _, p, _ in loader]
        normalised = [TF.normalize(unit_pixels(p), loaded.mean, loaded.std) for p in batches]
        schema = embedding_schema(IMAGE_FIELDS, loaded.embed_dim, "float16", {})

        def bare():
            with torch.inference_mode(), loaded.autocast():
                for batch in normalised:
                    loaded.model.encode_image(batch)

        def step_compute():
            with EmbeddingWriter(Path(tmp) / "compute.parquet", schema) as writer:
                for batch in batches:
                    ids = [f"image{i}" for i in range(len(batch))]
                    pixels = family_inputs(batch)(spec.family)
                    embeddings = encode_pixels(loaded, apply_spec(pixels, ids, spec)).cpu().numpy()
                    n = len(embeddings)
                    writer.write(
                        {
                            "image_id": ["x"] * n,
                            "label_index": [0] * n,
                            "family": ["clean"] * n,
                            "severity": [0] * n,
                            "seed": [0] * n,
                        },
                        embeddings,
                    )

        def step_end_to_end():
            with EmbeddingWriter(Path(tmp) / "e2e.parquet", schema) as writer:
                extract_image_embeddings(loaded, rows, [spec], writer, batch_size, workers)

        t_bare, t_compute, t_e2e = (best_of(repeats, f) for f in (bare, step_compute, step_end_to_end))
    return {
        "model": name,
        "perturbation": f"{family} s3" if family else "clean",
        "device": str(loaded.device),
        "precision": loaded.precision,
        "batch_size": batch_size,
        "images": images,
        "bare_img_s": images / t_bare,
        "step_compute_img_s": images / t_compute,
        "step_e2e_img_s": images / t_e2e,
        "ratio_compute": t_bare / t_compute,
        "ratio_e2e": t_bare / t_e2e,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny_random", "vit_b_32_random"], choices=sorted(MODELS))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--families", nargs="*", default=[], help="also time perturb + embed with these families")
    parser.add_argument("--out", default="benchmarks/out/embed.csv")
    args = parser.parse_args()
    rows = [
        measure(m, args.images, args.batch_size, args.workers, args.precision, args.repeats, family)
        for m in args.models
        for family in [None, *args.families]
    ]
    print(f"hardware: {hardware()}\n")
    print(write_table(rows, args.out))


if __name__ == "__main__":
    main()
