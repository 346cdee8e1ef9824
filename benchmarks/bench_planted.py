"""Train the planted-world CLIP from scratch on CPU and measure what it learned, zero-shot.

    python benchmarks/bench_planted.py [--train 24000] [--test 2000] [--test-shifted 2000]
        [--steps N] [--batch-size N] [--lr X] [--paired-attributes [A ...]] [--hard-negatives [A ...]]
        [--threads 2] [--out benchmarks/out/planted.csv]

Generates the planted-concept world (``cliplens.planted``, default PlantedConfig apart from the
counts), trains ``cliplens-planted-vit`` with the default TrainingConfig (options override single
fields) and reports, per held-out split, zero-shot accuracy on single-object images (their labels
are unambiguous) for each attribute, and the worst-group shape accuracy over groups
(shape, background). ``test`` has the background independent of shape; ``test_shifted`` reverses
the train correlation, so a shape classifier leaning on the background fails there. Seconds are
training time (evaluation excluded) on the wall clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import hardware, write_table  # noqa: E402

from cliplens.planted import PlantedConfig, generate_split  # noqa: E402
from cliplens.training import TrainingConfig, create_planted_clip, train_clip, zero_shot_accuracies, zero_shot_predictions  # noqa: E402

HELD_OUT = ("test", "test_shifted")


def single_objects(split: tuple[np.ndarray, np.ndarray, pd.DataFrame]) -> tuple[np.ndarray, pd.DataFrame]:
    """The images and records of a split that show one object."""
    images, _, records = split
    keep = (records["num_objects"] == 1).to_numpy()
    return images[keep], records[keep].reset_index(drop=True)


def worst_group_accuracy(predicted_shapes: np.ndarray, records: pd.DataFrame) -> float:
    """Least shape accuracy over the (shape, background) groups present."""
    correct = pd.Series(predicted_shapes == records["shape"].to_numpy())
    return float(correct.groupby([records["shape"], records["background"]]).mean().min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=24000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--test-shifted", type=int, default=2000)
    for field in ("steps", "batch_size", "lr", "warmup_steps", "eval_every", "seed"):
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(getattr(TrainingConfig(), field)), default=None)
    for field in ("paired_attributes", "hard_negatives"):  # e.g. --paired-attributes (none) or --hard-negatives shape
        parser.add_argument(f"--{field.replace('_', '-')}", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/out/planted.csv")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("cliplens").setLevel(logging.INFO)  # progress lines; open_clip logs on the root logger
    torch.set_num_threads(args.threads)

    world = PlantedConfig(counts={"train": args.train, "test": args.test, "test_shifted": args.test_shifted})
    start = time.perf_counter()
    splits = {split: generate_split(world, split) for split in world.counts}
    generate_seconds = time.perf_counter() - start
    overrides = {
        k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(TrainingConfig)} and v is not None
    }
    cfg = TrainingConfig.from_mapping({**dataclasses.asdict(TrainingConfig()), **overrides})
    held_out = {split: single_objects(splits[split]) for split in HELD_OUT}
    vocabularies = world.vocabularies()
    model, tokenizer = create_planted_clip(cfg.seed)

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return {f"test {k}": v for k, v in zero_shot_accuracies(model, tokenizer, *held_out["test"], vocabularies).items()}

    train_images, _, train_records = splits["train"]
    history = train_clip(model, tokenizer, train_images, train_records, cfg, evaluate=evaluate)
    rows = []
    for split, (images, records) in held_out.items():
        predicted = zero_shot_predictions(model, tokenizer, images, vocabularies)
        rows.append(
            {
                "split": split,
                "images": len(images),
                "train images": args.train,
                "steps": cfg.steps,
                "batch": cfg.batch_size,
                "train s": round(history[-1]["seconds"], 1),
                "final loss": history[-1]["loss"],
                **{
                    attribute: float(np.mean(predicted[attribute] == records[attribute].to_numpy())) for attribute in vocabularies
                },
                "worst group (shape)": worst_group_accuracy(predicted["shape"], records),
            }
        )
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{hardware()}; load average {load}; generation {generate_seconds:.1f} s for {sum(world.counts.values())} images; {cfg}"
    )
    print(write_table(rows, args.out))


if __name__ == "__main__":
    main()
