"""End-to-end: the head-level interpretation rules of the workflow with tiny_random, and their planning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, shared_dataset
from test_pipeline import snakemake

from cliplens.config import ConfigError, compose_config
from cliplens.interpret.ablation import NO_LABELS, ablation_table
from cliplens.interpret.contributions import write_head_contributions
from cliplens.planning import decomposable, interpret_figure_names, query_map_names

SMALL = [
    "model=tiny_random",
    "interpret__max_images=8",
    "interpret__n_boot=50",
    "interpret__textspan__top_m=5",
    "interpret__queries__texts=[cat]",
    "interpret__queries__heads=[[-1,0]]",
    "interpret__queries__contrastive=[[cat,rocket]]",
]
RESULTS = "results/interpret/model=tiny_random/dataset={dataset}"
FIGURES = "results/figures/model=tiny_random/dataset={dataset}/interpret"


def figure_targets(dataset: str, config: list[str]) -> list[str]:
    """Every interpretation figure the workflow plans for a configuration (``--config`` pairs)."""
    overrides = [key.replace("__", ".") + "=" + value for key, value in (pair.split("=", 1) for pair in config)]
    cfg = compose_config(ROOT / "config", overrides)
    return [f"{FIGURES.format(dataset=dataset)}/{name}.png" for name in interpret_figure_names(cfg)]


@pytest.fixture(scope="module")
def interpret_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("interpret")
    snakemake(workdir, "--cores", "2", *figure_targets("skimage_samples", SMALL), config=SMALL)
    return workdir / RESULTS.format(dataset="skimage_samples")


@pytest.mark.slow
def test_textspan_has_one_row_per_head_and_rank(interpret_run):
    spans = pd.read_csv(interpret_run / "textspan.csv")
    per_head = spans.groupby(["layer", "head"])["rank"].agg(list)
    assert len(per_head) == 4 * 4  # tiny_random: 4 layers x 4 heads, all within the last 4 layers
    assert all(ranks == list(range(5)) for ranks in per_head)
    assert spans["variance_explained"].between(0, 1).all()
    assert (spans.groupby(["layer", "head"])["variance_explained"].sum() <= 1 + 1e-9).all()
    assert spans["text"].notna().all()


@pytest.mark.slow
def test_mean_ablation_of_nothing_is_the_zero_shot_accuracy(interpret_run):
    table = pd.read_csv(interpret_run / "mean_ablation.csv")
    accuracy = table.set_index("ablation")["accuracy"]
    assert accuracy["none"] == pytest.approx(accuracy["zero_shot"], abs=1 / 8 + 1e-9)  # float16 storage: one image at most
    assert table["accuracy"].between(0, 1).all() and (table["n_images"] == 8).all()
    assert len(table[table["ablation"] == "head"]) == 16  # every layer's heads are stored
    assert sorted(table.loc[table["ablation"] == "attn_upto", "layer"]) == [0, 1, 2, 3]


@pytest.mark.slow
def test_head_labels_and_metrics_with_confidence_intervals(interpret_run):
    labels = pd.read_csv(interpret_run / "head_labels.csv")
    shares = labels.filter(like="share_")
    assert len(labels) == 16 and shares.shape[1] == 12
    np.testing.assert_allclose(shares.sum(axis=1), 1)
    assert (labels["consistency"] >= 1 / 12 - 1e-12).all() and (labels["consistency"] <= 1).all()
    metrics = pd.read_csv(interpret_run / "interpretability_metrics.csv")
    assert set(metrics["metric"]) == {"consistency", "head_disentanglement", "property_disentanglement"}
    for column in ("value", "ci_low", "ci_high"):
        assert metrics[column].between(0, 1).all()
    assert ((metrics["ci_low"] <= metrics["value"] + 1e-12) & (metrics["value"] <= metrics["ci_high"] + 1e-12)).all()


@pytest.mark.slow
def test_every_figure_is_written_as_png_and_every_plot_as_pdf(interpret_run):
    workdir = interpret_run.parents[3]
    figures = [workdir / target for target in figure_targets("skimage_samples", SMALL)]
    assert "segmentation_evaluation" not in {f.stem for f in figures}  # skimage has no masks
    pictures = {"property_neighbours", "head_image_neighbours", "head_text_neighbours", "segmentation"}

    def shows_images(figure):
        return figure.stem in pictures or figure.parent.name in ("topic_maps", "contrastive_maps")

    assert all(f.is_file() and f.with_suffix(".pdf").is_file() != shows_images(f) for f in figures)
    assert len([f for f in figures if f.parent.name in ("topic_maps", "contrastive_maps")]) == 2 + 2


@pytest.mark.slow
def test_decomposition_segmentation_on_coco128_masks(tmp_path):
    mirror = shared_dataset("coco128")
    config = [
        "model=tiny_random",
        "dataset=coco128",
        f"dataset__mirror={mirror}",
        "interpret__max_images=4",
        "interpret__n_boot=50",
        "embedding__templates=single",
    ]
    target = f"{FIGURES.format(dataset='coco128')}/segmentation_evaluation.png"
    snakemake(tmp_path, "--cores", "2", target, config=config)
    results = tmp_path / RESULTS.format(dataset="coco128") / "segmentation"
    segmentation = pd.read_csv(results / "segmentation.csv")
    assert list(segmentation["method"]) == ["decomposition"]
    assert segmentation["miou"].between(0, 1).all() and segmentation["pixel_accuracy"].between(0, 1).all()
    summary = pd.read_csv(results / "summary.csv")
    assert {"iou", "average_precision", "pointing_hit", "energy_in_mask"} <= set(summary["metric"])
    per_map = pd.read_parquet(results / "per_map.parquet")
    assert len(per_map) > 0 and per_map["image_id"].nunique() == 4


def test_only_vit_models_are_decomposed():
    grid = compose_config(ROOT / "config", ["model=tiny_random", "models=[tiny_random_resnet]"])["model_grid"]
    assert decomposable(grid["tiny_random"]) and not decomposable(grid["tiny_random_resnet"])


def test_ablation_table_uses_labelled_images_only_and_says_when_there_are_none(tiny_loaded, tmp_path):
    images = torch.rand(5, 3, tiny_loaded.image_size, tiny_loaded.image_size, generator=torch.Generator().manual_seed(0))
    ids = [f"img{i}" for i in range(5)]
    store = write_head_contributions([(ids, images)], tiny_loaded, tmp_path / "store", layers=None, dtype="float32")
    classes = np.random.default_rng(0).normal(size=(3, store.meta["dim"])).astype(np.float32)
    manifest = pd.DataFrame({"image_id": ids, "label_index": [0, -1, 2, 1, -1]})
    table = ablation_table(store, manifest, classes).set_index("ablation")
    assert (table["n_images"] == 3).all()
    assert table.loc["none", "accuracy"] == table.loc["zero_shot", "accuracy"]  # float32: exactly the model's embedding
    unlabelled = ablation_table(store, manifest.assign(label_index=-1), classes)
    assert list(unlabelled["ablation"]) == [NO_LABELS] and unlabelled["n_images"].item() == 0


def test_query_maps_follow_the_configured_queries():
    queries = {"images": [], "texts": ["a", "b", "c"], "contrastive": [["a", "b"]]}
    topic, contrastive = query_map_names(queries)
    assert len(topic) == 2 * 3 and contrastive == ["contrastive_maps/image0_pair0", "contrastive_maps/image1_pair0"]
    assert query_map_names({**queries, "images": ["x"], "contrastive": []}) == (topic[:3], [])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("interpret.textspan.pool=/no/such/pool.txt", "neither a file"),
        ("interpret.textspan.pool=textspan_words", "needs its directory"),
        ("interpret.queries.properties=[colr]", "unknown"),
        ("interpret.textspan.templates=nope", "interpret.textspan.templates"),
        ("interpret.label_weighting=max", "valid choices"),
        ("interpret.max_images=1", "interpret.max_images"),
    ],
)
def test_invalid_interpret_config_fails_before_any_job(override, message, monkeypatch):
    monkeypatch.delenv("CLIPLENS_TEXTSPAN_DIR", raising=False)
    with pytest.raises(ConfigError, match=message):
        compose_config(ROOT / "config", ["model=tiny_random", override])
