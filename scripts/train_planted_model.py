"""Train the planted-concept CLIP on the train split of its world; checkpoint, model card, curve (Snakemake script)."""

import json
import time

import pandas as pd

from cliplens.io import atomic_output
from cliplens.models import save_checkpoint
from cliplens.planted import PlantedConfig, generate_split
from cliplens.plotting import training_curve_figure
from cliplens.runtime import job_logging, resolve_device
from cliplens.training import TrainingConfig, create_planted_clip, train_clip, zero_shot_accuracies

with job_logging(snakemake.log[0], snakemake.threads) as log:
    cfg, outputs = snakemake.params.model, snakemake.output
    world = PlantedConfig.from_mapping(cfg["world"])
    device = str(resolve_device(snakemake.resources.device))
    training = TrainingConfig.from_mapping({**cfg["training"], "device": device})
    images, _, records = generate_split(world, "train")
    held_out_images, _, held_out = generate_split(world, "test")
    single = (held_out["num_objects"] == 1).to_numpy()  # their labels are unambiguous: no "first" object to guess
    held_out_images, held_out = held_out_images[single], held_out[single].reset_index(drop=True)
    vocabularies = world.vocabularies()
    model, tokenizer = create_planted_clip(cfg["seed"])

    def held_out_accuracy(model):
        accuracies = zero_shot_accuracies(model, tokenizer, held_out_images, held_out, vocabularies)
        return {f"accuracy_{attribute}": value for attribute, value in accuracies.items()}

    start = time.perf_counter()
    history = pd.DataFrame(train_clip(model, tokenizer, images, records, training, held_out_accuracy, log))
    save_checkpoint(model.cpu(), outputs.checkpoint)
    final = history.iloc[-1]
    card = {
        "model": cfg["name"],
        "arch": cfg["arch"],
        "training": cfg["training"],
        "world": cfg["world"],
        "device": device,
        "steps": int(final["step"]),
        "seconds": round(time.perf_counter() - start, 1),
        "final_loss": float(final["loss"]),
        "held_out_images": len(held_out),
        "held_out_zero_shot_accuracy": {
            c.removeprefix("accuracy_"): float(final[c]) for c in history if c.startswith("accuracy_")
        },
        "chance": {attribute: 1 / len(values) for attribute, values in vocabularies.items()},
    }
    with atomic_output(outputs.card) as tmp:
        tmp.write_text(json.dumps(card, indent=2))
    training_curve_figure(history, outputs.figure)
    log.info("trained %s: %s", cfg["name"], card["held_out_zero_shot_accuracy"])
