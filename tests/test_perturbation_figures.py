"""Perturbation figures: files written, data drawn as given, titles and the random-weights stamp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shared_dataset

from cliplens.figure_files import RANDOM_WEIGHTS_NOTE
from cliplens.perturbation import figures, galleries
from cliplens.perturbation.drift import drift_distributions, drift_table, drift_trajectories
from cliplens.perturbation.statistics import aggregate, per_image_metrics, susceptibility, top_k
from cliplens.sheets import Sheet

FAMILIES = ["blur", "noise"]
SEVERITIES = [1, 2, 3]
DRIFT_LABELS = ["cat", "dog", "a noisy photo"]


@pytest.fixture(scope="module")
def tables() -> dict:
    """Statistics and drift tables of two models on 8 synthetic images, D = 6."""
    rng = np.random.default_rng(0)
    text = rng.normal(size=(4, 6))
    clean = rng.normal(size=(8, 6)) + 3 * text[np.arange(8) % 4]
    rows, embeddings = [], []
    for model_index, model in enumerate(["ViT-B-32", "RN50"]):
        for i in range(8):
            rows.append(dict(model=model, image_id=f"img{i}", label_index=i % 4, family="clean", severity=0, seed=0))
            embeddings.append(clean[i])
            for family_index, family in enumerate(FAMILIES):
                for severity in SEVERITIES:
                    rows.append(
                        dict(model=model, image_id=f"img{i}", label_index=i % 4, family=family, severity=severity, seed=0)
                    )
                    shift = severity * (1 + family_index + model_index) * rng.normal(size=6)
                    embeddings.append(clean[i] + shift)
    records = pd.DataFrame(rows)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    per_image = per_image_metrics(records, embeddings, text.astype(np.float32), 100.0)
    probs = drift_distributions(embeddings, rng.normal(size=(3, 6)), 20.0)
    drift_rows = drift_table(records, probs, DRIFT_LABELS)
    return {
        "per_image": per_image,
        "aggregate": aggregate(per_image, n_boot=100),
        "top": top_k(susceptibility(per_image), 2),
        "drift": drift_rows,
        "trajectories": drift_trajectories(drift_rows[drift_rows["model"] == "RN50"]),
    }


def _texts(fig) -> list[str]:
    """The figure's own texts (a sheet's: every caption)."""
    return list(fig.texts) if isinstance(fig, Sheet) else [text.get_text() for text in fig.texts]


PICTURES = {"gallery"}
"""Figures that show images: PNG only (plots also get a PDF)."""


def _assert_written(path: Path, pdf: bool) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    vector = path.with_suffix(".pdf")
    assert vector.exists() == pdf, path
    assert not pdf or (vector.read_bytes()[:5] == b"%PDF-" and vector.stat().st_size > 1000)


def _figures(tables: dict, tmp_path: Path, random_weights: bool) -> dict:
    """Every figure of the module, keyed by name."""
    images = {(f"img{i}", s): np.full((8, 8, 3), s / 3) for i in range(8) for s in [0, *SEVERITIES]}
    common = dict(dataset="toyset", random_weights=random_weights)
    return {
        "heatmaps": figures.plot_drop_heatmaps(tables["aggregate"], tmp_path / "heatmaps.png", model="RN50", **common),
        "curves": figures.plot_severity_curves(tables["aggregate"], "alignment", tmp_path / "curves.png", model="RN50", **common),
        "models": figures.plot_model_comparison(tables["aggregate"], "top1", tmp_path / "models.png", **common),
        "gallery": galleries.plot_susceptibility_gallery(
            tables["top"],
            images,
            tmp_path / "gallery.png",
            family="noise",
            severities=[0, *SEVERITIES],
            model="RN50",
            per_image=tables["per_image"],
            **common,
        ),
        "drift": figures.plot_drift_probabilities(
            tables["drift"], ["img0", "img1"], tmp_path / "drift.png", family="noise", model="RN50", **common
        ),
        "trajectories": figures.plot_drift_trajectories(
            tables["trajectories"], ["img0", "img1"], tmp_path / "trajectories.png", family="noise", **common
        ),
    }


@pytest.mark.parametrize("random_weights", [True, False])
def test_every_figure_writes_png_and_pdf_with_title_and_stamp(tables: dict, tmp_path: Path, random_weights: bool) -> None:
    for name, fig in _figures(tables, tmp_path, random_weights).items():
        _assert_written(tmp_path / f"{name}.png", pdf=name not in PICTURES)
        texts = _texts(fig)
        assert (RANDOM_WEIGHTS_NOTE in texts) == random_weights, name
        title = next(text for text in texts if "dataset: toyset" in text)
        assert "RN50" in title, name


def test_heatmaps_show_the_aggregate_values(tables: dict, tmp_path: Path) -> None:
    fig = figures.plot_drop_heatmaps(
        tables["aggregate"], tmp_path / "h.png", dataset="toyset", random_weights=False, model="ViT-B-32"
    )
    rows = tables["aggregate"].query("model == 'ViT-B-32' and family != 'clean'")
    accuracy = rows.pivot(index="family", columns="severity", values="top1_drop_mean").loc[FAMILIES]
    similarity = 1 - rows.pivot(index="family", columns="severity", values="self_similarity_mean").loc[FAMILIES]
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), accuracy.to_numpy())
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), similarity.to_numpy())
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == FAMILIES


def test_severity_curves_start_at_clean(tables: dict, tmp_path: Path) -> None:
    fig = figures.plot_severity_curves(
        tables["aggregate"], "self_similarity", tmp_path / "c.png", dataset="toyset", random_weights=False, model="RN50"
    )
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == FAMILIES
    for line in lines:
        assert line.get_xdata().tolist() == [0, *SEVERITIES]
        assert line.get_ydata()[0] == pytest.approx(1.0)


def _clean_then(table: pd.DataFrame, family: str, column: str) -> list[float]:
    """``column`` of the clean row, then of ``family`` by ascending severity."""
    rows = pd.concat([table[table["family"] == "clean"], table[table["family"] == family].sort_values("severity")])
    return rows[column].tolist()


def test_severity_curves_draw_each_familys_means_in_severity_order(tables: dict, tmp_path: Path) -> None:
    fig = figures.plot_severity_curves(
        tables["aggregate"], "alignment", tmp_path / "c.png", dataset="toyset", random_weights=False, model="RN50"
    )
    rows = tables["aggregate"].query("model == 'RN50'")
    for line in fig.axes[0].get_lines():
        np.testing.assert_allclose(line.get_ydata(), _clean_then(rows, line.get_label(), "alignment_mean"))


def test_model_comparison_draws_each_models_means_in_its_familys_panel(tables: dict, tmp_path: Path) -> None:
    fig = figures.plot_model_comparison(tables["aggregate"], "top1", tmp_path / "m.png", dataset="toyset", random_weights=False)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_lines()]
    assert [ax.get_title() for ax in panels] == FAMILIES
    for ax in panels:
        assert [line.get_label() for line in ax.get_lines()] == ["RN50", "ViT-B-32"]
        for line in ax.get_lines():
            rows = tables["aggregate"][tables["aggregate"]["model"] == line.get_label()]
            assert line.get_xdata().tolist() == [0, *SEVERITIES]
            np.testing.assert_allclose(line.get_ydata(), _clean_then(rows, ax.get_title(), "top1_mean"))


def test_drift_panels_draw_each_images_label_probabilities_and_divergence(tables: dict, tmp_path: Path) -> None:
    fig = figures.plot_drift_probabilities(
        tables["drift"],
        ["img0", "img1"],
        tmp_path / "d.png",
        family="noise",
        dataset="toyset",
        random_weights=False,
        model="RN50",
    )
    drift = tables["drift"].query("model == 'RN50' and family == 'noise'")
    for ax, image_id in zip(fig.axes, ["img0", "img1"]):
        assert ax.get_title() == image_id
        rows = drift[drift["image_id"] == image_id].sort_values("severity")
        lines = ax.get_lines()[: len(DRIFT_LABELS) + 1]
        assert [line.get_label() for line in lines] == [*DRIFT_LABELS, "JS divergence from clean (bits)"]
        for line, column in zip(lines, [f"p_{label}" for label in DRIFT_LABELS] + ["js_divergence"]):
            assert line.get_xdata().tolist() == [0, *SEVERITIES]
            np.testing.assert_allclose(line.get_ydata(), rows[column], err_msg=f"{image_id} {column}")


def test_trajectories_draw_each_images_path_through_the_projection(tables: dict, tmp_path: Path) -> None:
    fig = figures.plot_drift_trajectories(
        tables["trajectories"], ["img0", "img1"], tmp_path / "t.png", family="noise", dataset="toyset", random_weights=False
    )
    coords = tables["trajectories"].coords.query("family == 'noise'")
    paths = fig.axes[0].get_lines()
    assert len(paths) == 2
    for line, image_id in zip(paths, ["img0", "img1"]):
        rows = coords[coords["image_id"] == image_id].sort_values("severity")
        np.testing.assert_allclose(line.get_xydata(), rows[["pc1", "pc2"]].to_numpy())
    # severities are discrete: one colour each, the colour bar labelled with them
    levels = [0, *SEVERITIES]
    bar = fig.axes[1]
    assert [label.get_text() for label in bar.get_yticklabels()] == [str(level) for level in levels]
    for dots, image_id in zip(fig.axes[0].collections[1:], ["img0", "img1"]):
        severity = coords[coords["image_id"] == image_id].sort_values("severity")["severity"]
        assert dots.get_array().tolist() == [levels.index(value) for value in severity]
        assert len({tuple(colour) for colour in dots.to_rgba(dots.get_array())}) == len(levels)


def test_gallery_reads_every_image_through_a_callable(tables: dict, tmp_path: Path) -> None:
    requested = []

    def render(image_id: str, severity: int) -> np.ndarray:
        requested.append((image_id, severity))
        return np.zeros((4, 4, 3))

    sheet = galleries.plot_susceptibility_gallery(
        tables["top"],
        render,
        tmp_path / "g.png",
        family="blur",
        severities=[0, 3],
        dataset="toyset",
        random_weights=False,
        model="ViT-B-32",
    )
    chosen = tables["top"].query("model == 'ViT-B-32' and family == 'blur'")
    assert sorted(requested) == sorted((i, s) for i in chosen["image_id"] for s in [0, 3])
    mosaic = sheet.mosaic  # one image of 100 px thumbnails, a row per image
    assert mosaic.shape[0] == len(chosen) * (100 + 22) and mosaic.shape[1] == 2 * 100 + 8


def test_gallery_thumbnails_show_each_image_at_its_cell(tables: dict, tmp_path: Path) -> None:
    """Cell (row, column) of the mosaic is the image of that row's image id at that column's
    severity, reduced to 100 px; the cell's text is its alignment, named once in the title."""
    shades = {(f"img{i}", s): np.full((224, 224, 3), (10 * i + 30 * s) / 255) for i in range(8) for s in [0, *SEVERITIES]}
    sheet = galleries.plot_susceptibility_gallery(
        tables["top"], shades, tmp_path / "g.png", family="noise", severities=[0, 2], dataset="toyset",
        random_weights=False, model="RN50", per_image=tables["per_image"],
    )  # fmt: skip
    rows = tables["top"].query("model == 'RN50' and family == 'noise'").sort_values(["which", "rank"], ascending=[False, True])
    mosaic = sheet.mosaic
    for r, image_id in enumerate(rows["image_id"]):
        for c, severity in enumerate([0, 2]):
            cell = mosaic[r * 122 : r * 122 + 100, c * 108 : c * 108 + 100]
            assert (cell == round(255 * shades[(image_id, severity)][0, 0, 0])).all(), (image_id, severity)
    texts = sheet.texts
    alignment = tables["per_image"].query(
        "model == 'RN50' and image_id == @rows.image_id.iloc[0] and family == 'noise' and severity == 2"
    )
    assert f"{alignment['alignment'].mean():.3f}" in texts
    assert "under each image: its alignment" in texts[0]  # the title names the cells' metric


def test_a_preview_shows_the_image_at_every_severity_with_its_parameters(tmp_path: Path) -> None:
    shades = {("img0", s): np.full((224, 224, 3), (40 * s + 20) / 255) for s in [0, *SEVERITIES]}
    sheet = galleries.plot_family_preview(shades, "img0", "blur", tmp_path / "p.png", {"sigma": [0.5, 1.0, 2.0]})
    _assert_written(tmp_path / "p.png", pdf=False)
    mosaic = sheet.mosaic  # one image of 170 px panels
    assert mosaic.shape[:2] == (170 + 8, 4 * 170 + 3 * 8)
    for c, severity in enumerate([0, *SEVERITIES]):
        assert (mosaic[:170, c * 178 : c * 178 + 170] == 40 * severity + 20).all(), severity
    assert sheet.texts == ("blur on img0", "clean", "severity 1\nsigma=0.5", "severity 2\nsigma=1", "severity 3\nsigma=2")


def test_a_table_with_several_models_needs_a_choice(tables: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pass model="):
        figures.plot_drop_heatmaps(tables["aggregate"], tmp_path / "x.png", dataset="toyset", random_weights=False)


def test_perturbed_views_decode_once_and_match_the_embedding_steps_perturbation(tmp_path: Path) -> None:
    """Views are the images as the embedding step sees them under each family; each family
    perturbs only the images it shows."""
    import torch
    from PIL import Image
    from skimage import data

    from cliplens.images import iterate_batches, preprocess_without_normalize
    from cliplens.perturbation.grid import apply_spec, family_specs
    from cliplens.perturbation.views import perturbed_views

    names = ["astronaut", "chelsea", "coffee"]
    for name in names:
        Image.fromarray(getattr(data, name)()).save(tmp_path / f"{name}.png")
    rows = pd.DataFrame({"image_id": names, "path": [str(tmp_path / f"{n}.png") for n in names], "mask_path": None})
    specs = {family: family_specs(family, [1, 3], [0], {}) for family in ("contrast", "rotation")}
    shown = {"contrast": {"astronaut", "coffee"}, "rotation": {"chelsea"}}
    views = dict(perturbed_views(rows, specs, size=64, shown=shown))
    assert set(views["contrast"]) == {(i, s) for i in ("astronaut", "coffee") for s in (0, 1, 3)}
    assert set(views["rotation"]) == {("chelsea", s) for s in (0, 1, 3)}
    _, pixels, _ = next(iterate_batches(rows, preprocess_without_normalize({"size": 64}), 64, 3, 0, torch.device("cpu")))
    expected = apply_spec(pixels[1:2], ["chelsea"], specs["rotation"][1])  # rotation, severity 3
    as_uint8 = (expected[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(views["rotation"][("chelsea", 3)], as_uint8)
    assert views["contrast"][("coffee", 0)].shape == (64, 64, 3)


def test_perturbed_views_of_masked_families_match_the_embedding_steps_loader(tmp_path: Path, caplog) -> None:
    """Views decode with Pillow, not the model's loader: masks (COCO) and pixels equal the loader's,
    so a masked family perturbs the same pixels; an unreadable file is logged and skipped."""
    import torch

    from cliplens.images import iterate_batches, preprocess_without_normalize
    from cliplens.perturbation.grid import apply_spec, family_specs
    from cliplens.perturbation.views import perturbed_views

    coco = shared_dataset("coco128")
    masks = sorted((coco / "semantic_segmentation" / "masks" / "train2017").glob("*.png"))[:3]
    images = [coco / "images" / "train2017" / f"{mask.stem}.jpg" for mask in masks]
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    rows = pd.DataFrame(
        {
            "image_id": [path.stem for path in images] + ["broken"],
            "path": [str(path) for path in images] + [str(tmp_path / "broken.jpg")],
            "mask_path": [str(path) for path in masks] + [None],
        }
    )
    specs = {
        "background_mask": family_specs("background_mask", [2, 5], [0], {}),
        "jpeg_compression": family_specs("jpeg_compression", [3], [0], {}),
    }
    views = dict(perturbed_views(rows, specs, size=96))
    assert {image_id for image_id, _ in views["background_mask"]} == set(rows["image_id"][:3])
    assert "skipping unreadable image" in caplog.text and "broken.jpg" in caplog.text
    loader = iterate_batches(rows[:3], preprocess_without_normalize({"size": 96}), 96, 3, 0, torch.device("cpu"), True, True)
    _, eight_bit, objects = next(loader)
    for spec in specs["background_mask"]:
        expected = (apply_spec(eight_bit, rows["image_id"][:3].tolist(), spec, objects) * 255).round().to(torch.uint8)
        for index, image_id in enumerate(rows["image_id"][:3]):
            np.testing.assert_array_equal(
                views["background_mask"][(image_id, spec.severity)], expected[index].permute(1, 2, 0).numpy()
            )
    jpeg = apply_spec(eight_bit, rows["image_id"][:3].tolist(), specs["jpeg_compression"][0])
    np.testing.assert_array_equal(
        views["jpeg_compression"][(rows["image_id"][0], 3)], (jpeg[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    )
