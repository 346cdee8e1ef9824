"""Ground truth end to end: the workflow trains the planted CLIP (CI-sized) and scores every line against the truth.

Thresholds are set from measured margins of this configuration (docs/groundtruth.md), not tuned to pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_pipeline import snakemake

from cliplens.perturbation.groundtruth import normalised_drops

pytestmark = pytest.mark.slow

CI_SIZED = [
    "dataset=planted",
    "model=planted_clip",
    "planted__counts__train=8000",
    "planted__counts__test=200",
    "planted__counts__test_shifted=200",
    "model__training__steps=400",
    "model__training__batch_size=128",
    "model__training__warmup_steps=20",
    "model__training__eval_every=100",
    "perturbation__severities=[3,5]",
    "stats__n_boot=50",
    "explain__evaluation__n_boot=50",
    "interpret__n_boot=50",
    "interpret__max_images=16",
    "explain__max_images=8",
]
GROUNDTRUTH = "results/groundtruth/model=planted_clip/dataset=planted"


@pytest.fixture(scope="session")
def planted_run(tmp_path_factory) -> Path:
    """One CI-sized run of the ground-truth evaluation, shared by every test here."""
    workdir = tmp_path_factory.mktemp("planted")
    snakemake(workdir, "--cores", "2", "--until", "groundtruth_report", config=CI_SIZED)
    return workdir


def test_trained_model_knows_colour_and_shape_above_chance(planted_run):
    card = json.loads((planted_run / "results/models/planted_clip/model_card.json").read_text())
    accuracy, chance = card["held_out_zero_shot_accuracy"], card["chance"]
    assert card["steps"] == 400 and card["seconds"] > 0
    assert 0 < card["held_out_images"] < 200  # single-object test images only: their labels are unambiguous
    assert accuracy["colour"] > chance["colour"] + 0.5  # measured 0.98 (chance 0.17)
    assert accuracy["shape"] > chance["shape"] + 0.08  # measured 0.39 on 164 images: shape needs about 400 paired steps
    assert (planted_run / "results/models/planted_clip/checkpoint.pt").stat().st_size > 0


def test_grayscale_lowers_colour_accuracy_more_than_shape_accuracy(planted_run):
    table = pd.read_csv(planted_run / GROUNDTRUTH / "perturbation.csv")
    accuracy = table.pivot_table(index=["family", "severity"], columns="attribute", values="accuracy")
    drop = accuracy.loc[("clean", 0)] - accuracy.loc["grayscale"].mean()
    assert drop["colour"] > 0.3  # measured 0.39 (clean 0.905 over all images, chance 0.17); shape 0.13; normalised 0.52
    assert drop["colour"] > drop["shape"] + 0.2
    assert normalised_drops(table).loc["grayscale", "colour"] > 0.5


def test_a_map_method_beats_the_random_map_on_the_pointing_game(planted_run):
    summary = pd.read_csv(planted_run / GROUNDTRUTH / "maps.csv")
    pointing = summary[summary["metric"] == "pointing_hit"].set_index("method")
    methods = pointing[pointing["kind"] == "method"]
    assert {"raw", "surgery", "gradcam", "decomposition"} <= set(methods.index)
    assert (methods["ci_low"] > pointing.loc["random", "mean"]).any()


def test_ablating_colour_heads_hurts_colour_more_than_shape(planted_run):
    ablation = pd.read_csv(planted_run / GROUNDTRUTH / "heads_ablation.csv")
    colour_heads = ablation[ablation["ablated_attribute"] == "colour"].set_index("target")
    assert colour_heads.loc["colour", "heads"] > 0
    # measured: colour -0.010, shape -0.025 with 2 colour heads (earlier CI-sized models: 0.060 vs 0.005):
    # the comparison the ground truth states, with a small margin on this model (docs/groundtruth.md)
    assert colour_heads.loc["colour", "drop"] > colour_heads.loc["shape", "drop"]


def test_expectations_table_has_a_verdict_for_every_line(planted_run):
    table = pd.read_csv(planted_run / GROUNDTRUTH / "expectations.csv")
    assert set(table["line"]) == {"perturbation", "maps", "heads", "sanity"}
    assert set(table["verdict"]) <= {"holds", "does not hold", "not testable", "not testable (clean accuracy at chance)"}
    markdown = (planted_run / GROUNDTRUTH / "expectations.md").read_text()
    assert f"of {len(table)} stated expectations hold" in markdown
