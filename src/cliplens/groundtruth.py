"""Ground truth of the planted-concept world: maps scored against the known object masks.

Every registered explanation method (:mod:`cliplens.maps`) explains each object of each image by
the text of that object ("a red circle") within the label set of every colour x shape phrase.
Its rendered map is scored against the object's mask beside two baselines that know nothing of
the image: a seeded random map and a centre prior. On two-object images the discriminative
pointing game asks whether the map of one object's text peaks on that object rather than on the
other. Definitions: docs/groundtruth.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from cliplens.maps import method_scores, render_scores
from cliplens.metrics import as_numpy, binary_metrics, summarise
from cliplens.models import LoadedModel

BASELINES = ("random", "centre_prior")
OBJECT_TEMPLATE = "a {colour} {shape}"
"""The text that names one object of the planted world."""


def object_texts(vocabularies: Mapping[str, Sequence[str]]) -> list[str]:
    """Every colour x shape phrase: the label set the maps are computed against."""
    return [OBJECT_TEMPLATE.format(colour=c, shape=s) for c in vocabularies["colour"] for s in vocabularies["shape"]]


def object_table(records: pd.DataFrame, texts: Sequence[str]) -> pd.DataFrame:
    """One row per (image, object): image row, mask value, text index, and the image's object count."""
    rows = []
    for image, (objects, count) in enumerate(zip(records["objects"], records["num_objects"])):
        for obj in json.loads(objects):
            text = OBJECT_TEMPLATE.format(colour=obj["colour"], shape=obj["shape"])
            rows.append((image, obj["mask_value"], texts.index(text), count))
    return pd.DataFrame(rows, columns=["image", "mask_value", "text", "num_objects"])


def auroc(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Area under the ROC curve of each map ``[M, H, W]`` as a pixel score for its mask (ties count half)."""
    flat = maps.reshape(len(maps), -1)
    labels = masks.reshape(len(masks), -1).astype(bool)
    ranks = rankdata(flat, axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        value = ((ranks * labels).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), value, np.nan)


def map_metrics(maps: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Pointing game (argmax inside the mask), energy inside the mask, IoU at the mean and AUROC per map."""
    metrics = binary_metrics(maps, masks, pointing_tolerance=0.0)
    return {
        "pointing_hit": metrics["pointing_hit"],
        "energy_in_mask": metrics["energy_in_mask"],
        "iou": metrics["iou"],
        "auroc": auroc(maps, masks),
    }


def baseline_maps(count: int, size: tuple[int, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Maps that ignore the image: uniform noise (seeded) and an isotropic Gaussian centre prior."""
    rows, cols = np.mgrid[0 : size[0], 0 : size[1]]
    centre = np.exp(-(((rows - (size[0] - 1) / 2) ** 2 + (cols - (size[1] - 1) / 2) ** 2) / (2 * (size[0] / 4) ** 2)))
    return {
        "random": np.random.default_rng(seed).random((count, *size)),
        "centre_prior": np.broadcast_to(centre, (count, *size)),
    }


def object_maps(
    loaded: LoadedModel,
    method: str,
    pixels: torch.Tensor,
    text: torch.Tensor,
    objects: pd.DataFrame,
    settings: Mapping[str, Any],
    batch_size: int = 64,
) -> np.ndarray:
    """Rendered maps ``[objects, H, W]`` of each object's text (batched over images, all texts at once)."""
    size = (pixels.shape[-2], pixels.shape[-1])
    parts = []
    for start in range(0, len(pixels), batch_size):
        chosen = objects[(objects["image"] >= start) & (objects["image"] < start + batch_size)]
        scores = method_scores(loaded, method, pixels[start : start + batch_size], text, settings)
        rows, columns = torch.as_tensor(chosen["image"].to_numpy() - start), torch.as_tensor(chosen["text"].to_numpy())
        parts.append(render_scores(scores[rows, columns][:, None], size)[:, 0].numpy())
    return np.concatenate(parts)


def discriminative_hits(maps: np.ndarray, masks: np.ndarray, objects: pd.DataFrame) -> np.ndarray:
    """For objects of two-object images: 1 where the map of the object's text is higher on that object
    than anywhere on the other object (its maximum over the own mask exceeds that over the other's),
    else 0; NaN for single-object images."""
    instance = as_numpy(masks)[objects["image"].to_numpy()]
    own = instance == objects["mask_value"].to_numpy()[:, None, None]
    other = (instance > 0) & ~own
    peak_own = np.where(own, maps, -np.inf).reshape(len(maps), -1).max(axis=1)
    peak_other = np.where(other, maps, -np.inf).reshape(len(maps), -1).max(axis=1)
    two = objects["num_objects"].to_numpy() == 2
    return np.where(two, (peak_own > peak_other).astype(np.float64), np.nan)


def evaluate_maps(
    loaded: LoadedModel,
    methods: Sequence[str],
    pixels: torch.Tensor,
    masks: np.ndarray,
    records: pd.DataFrame,
    vocabularies: Mapping[str, Sequence[str]],
    text: torch.Tensor,
    settings: Mapping[str, Any],
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (method or baseline, object): the metrics of :func:`map_metrics` and ``discriminative_hit``.

    ``pixels [N, 3, S, S]`` in [0, 1] and instance ``masks [N, S, S]`` (0 = background, k = object k)
    at the model's input size; ``text`` holds the embeddings of :func:`object_texts`.
    """
    objects = object_table(records, object_texts(vocabularies))
    object_masks = masks[objects["image"].to_numpy()] == objects["mask_value"].to_numpy()[:, None, None]
    all_maps = {method: object_maps(loaded, method, pixels, text, objects, settings) for method in methods}
    all_maps.update(baseline_maps(len(objects), object_masks.shape[-2:], seed))
    frames = []
    for method, maps in all_maps.items():
        metrics = map_metrics(maps, object_masks)
        metrics["discriminative_hit"] = discriminative_hits(maps, masks, objects)
        kind = "baseline" if method in BASELINES else "method"
        frames.append(
            pd.DataFrame(
                {"method": method, "kind": kind, "image_id": records["image_id"].to_numpy()[objects["image"]], **metrics}
            )
        )
    return pd.concat(frames, ignore_index=True)


def summarise_maps(per_object: pd.DataFrame, n_boot: int, seed: int = 0) -> pd.DataFrame:
    """Mean and bootstrap CI of every metric per method and baseline."""
    return summarise(per_object.drop(columns=["image_id"]), by=["kind", "method"], n_boot=n_boot, seed=seed)


def map_expectations(summary: pd.DataFrame) -> pd.DataFrame:
    """Stated expectations on the maps, each with its measured value and verdict.

    For every method: its pointing game beats the random map's (CI above the random mean), and its
    discriminative pointing game beats the random map's.
    """
    table = summary.set_index(["method", "metric"])
    rows = []
    for method in summary.loc[summary["kind"] == "method", "method"].unique():
        for metric, label in (("pointing_hit", "pointing game"), ("discriminative_hit", "discriminative pointing game")):
            ours, random = table.loc[(method, metric)], table.loc[("random", metric)]
            verdict = _verdict(ours["ci_low"] > random["mean"], ours["mean"])
            rows.append(
                {
                    "line": "maps",
                    "expectation": f"{method}: {label} above the random map",
                    "measured": f"{ours['mean']:.3f} [{ours['ci_low']:.3f}, {ours['ci_high']:.3f}] vs random {random['mean']:.3f}",
                    "verdict": verdict,
                }
            )
    return pd.DataFrame(rows, columns=["line", "expectation", "measured", "verdict"])


def _verdict(holds: bool, *measured: float) -> str:
    """'not testable' where a measured value is undefined (e.g. constant maps), else holds / does not hold."""
    if any(np.isnan(value) for value in measured):
        return "not testable"
    return "holds" if holds else "does not hold"


def sanity_expectations(similarity: pd.DataFrame) -> pd.DataFrame:
    """Cascading randomisation: per method, the maps' similarity to the intact model's falls from the first
    randomised stage to the last (the whole tower random), and at the last stage it is at most moderate
    (mean Spearman below 0.5): the trained model's maps differ from those of the same architecture at random."""
    stages = list(dict.fromkeys(similarity["stage"]))
    means = similarity.groupby(["method", "stage"], sort=False)["spearman"].mean()
    rows = []
    for method in dict.fromkeys(similarity["method"]):
        first, last = means[(method, stages[0])], means[(method, stages[-1])]
        rows.append(
            {
                "line": "sanity",
                "expectation": f"{method}: similarity to the trained maps falls as blocks are randomised",
                "measured": f"Spearman {first:.3f} after randomising {stages[0]}, {last:.3f} after {stages[-1]}",
                "verdict": _verdict(last < first, first, last),
            }
        )
        rows.append(
            {
                "line": "sanity",
                "expectation": f"{method}: maps of the trained model differ from the randomly initialised tower's",
                "measured": f"mean Spearman {last:.3f} with the fully randomised tower",
                "verdict": _verdict(last < 0.5, last),
            }
        )
    return pd.DataFrame(rows, columns=["line", "expectation", "measured", "verdict"])


def expectations_markdown(table: pd.DataFrame, model: str, random_weights: bool) -> str:
    """The expectations of every line as a Markdown page (verdicts counted in the heading)."""
    held = int((table["verdict"] == "holds").sum())
    lines = [f"# Ground truth: {model} on the planted world", "", f"{held} of {len(table)} stated expectations hold.", ""]
    if random_weights:
        lines += ["**Random weights: these findings say nothing about a trained CLIP model.**", ""]
    lines += ["| line | expectation | measured | verdict |", "|---|---|---|---|"]
    lines += [f"| {r.line} | {r.expectation} | {r.measured} | {r.verdict} |" for r in table.itertuples()]
    return "\n".join(lines) + "\n"
