"""Each explanation figure writes a non-empty PNG (plots also a PDF) and carries the random-weights stamp when asked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from cliplens import plotting
from cliplens.explain import figures as explain_figures
from cliplens.explain.figures import deletion_insertion_figure, overlay_grid, sanity_check_figure
from cliplens.metrics import summarise
from cliplens.plotting import segmentation_figure, summary_figure


def overlay(path: Path, random_weights: bool) -> list[Path]:
    rng = np.random.default_rng(0)
    maps = {"raw CLIP": rng.random((2, 3, 24, 24)), "Surgery": rng.random((2, 3, 24, 24))}
    return overlay_grid(rng.random((2, 24, 24, 3)), maps, ["a dog", "a cat", "grass"], path, random_weights=random_weights)


def segmentation(path: Path, random_weights: bool) -> list[Path]:
    rng = np.random.default_rng(0)
    prediction = rng.choice([1, 18, 193], size=(2, 20, 20))
    truth = rng.choice([0, 18, 193], size=(2, 20, 20))
    names = {0: "unlabeled", 1: "person", 18: "dog", 193: "grass-merged"}
    return segmentation_figure(
        rng.integers(0, 255, (2, 20, 20, 3), dtype=np.uint8),
        prediction,
        names,
        path,
        ground_truth=truth,
        random_weights=random_weights,
    )


def summary(path: Path, random_weights: bool) -> list[Path]:
    rng = np.random.default_rng(0)
    per_map = pd.DataFrame(
        {
            "model": np.repeat(["tiny-vit", "tiny-rn"], 10),
            "method": np.tile(np.repeat(["raw", "surgery"], 5), 2),
            "iou": rng.random(20),
            "energy_in_mask": rng.random(20),
        }
    )
    return summary_figure(summarise(per_map, n_boot=100), path, random_weights=random_weights)


def deletion_insertion(path: Path, random_weights: bool) -> list[Path]:
    rng = np.random.default_rng(0)
    fraction = np.linspace(0, 1, 6)
    curves = {
        label: {"fraction": fraction, "deletion": rng.random((4, 6)), "insertion": rng.random((4, 6))}
        for label in ("raw", "surgery")
    }
    return deletion_insertion_figure(curves, path, random_weights=random_weights)


def sanity_check(path: Path, random_weights: bool) -> list[Path]:
    rng = np.random.default_rng(0)
    stages = ["head", "block3", "block2", "block1", "block0", "embedding"]
    similarity = pd.DataFrame(
        {
            "stage": np.tile(np.repeat(stages, 3), 2),
            "method": np.repeat(["raw", "surgery"], 18),
            "spearman": rng.random(36),
            "ssim": rng.random(36),
        }
    )
    return sanity_check_figure(similarity, path, random_weights=random_weights)


PICTURES = {"overlay", "segmentation"}
"""Figures that show images: PNG only unless gallery PDFs are switched on (plots also get a PDF)."""

FIGURES: dict[str, Callable[[Path, bool], list[Path]]] = {
    "overlay": overlay,
    "segmentation": segmentation,
    "summary": summary,
    "deletion_insertion": deletion_insertion,
    "sanity_check": sanity_check,
}


@pytest.mark.parametrize("random_weights", [False, True])
@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_writes_png_and_pdf_with_stamp(
    name: str, random_weights: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamped: list[bool] = []
    original_mark, original_save_sheet = plotting.mark_random_weights, explain_figures.save_sheet

    def spy(fig) -> None:
        original_mark(fig)
        stamped.append(any(plotting.RANDOM_WEIGHTS_NOTE in t.get_text() for t in fig.texts))

    def sheet_spy(sheet, path):  # the overlays are a sheet of pictures, stamped when drawn
        stamped.extend([True] if plotting.RANDOM_WEIGHTS_NOTE in sheet.texts else [])
        return original_save_sheet(sheet, path)

    monkeypatch.setattr(plotting, "mark_random_weights", spy)
    monkeypatch.setattr(explain_figures, "save_sheet", sheet_spy)
    written = FIGURES[name](tmp_path / f"{name}.png", random_weights)
    assert sorted(p.suffix for p in written) == ([".png"] if name in PICTURES else [".pdf", ".png"])
    for path in written:
        assert path.is_file() and path.stat().st_size > 1000
    assert path.with_suffix(".pdf").exists() == (name not in PICTURES)
    height, width = matplotlib.image.imread(tmp_path / f"{name}.png").shape[:2]
    assert height > 50 and width > 50
    assert stamped == ([True] if random_weights else [])


def test_segmentation_panels_colour_each_class_as_its_legend_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows: images; columns: image, prediction, ground truth. Every pixel of class c is drawn in the
    colour of c's legend entry, the ignored class black, and the legend names the classes present."""
    drawn = []
    monkeypatch.setattr(plotting, "save_figure", lambda fig, path, **_: drawn.append(fig) or [])
    rng = np.random.default_rng(1)
    prediction = rng.choice([1, 18, 193], size=(2, 20, 20))
    truth = rng.choice([0, 18, 193], size=(2, 20, 20))
    names = {0: "unlabeled", 1: "person", 18: "dog", 193: "grass-merged", 7: "absent"}
    images = rng.integers(0, 255, (2, 20, 20, 3), dtype=np.uint8)
    segmentation_figure(images, prediction, names, tmp_path / "s.png", ground_truth=truth)
    (fig,) = drawn
    legend = {
        text.get_text(): handle.get_facecolor() for text, handle in zip(fig.legends[0].texts, fig.legends[0].legend_handles)
    }
    assert sorted(legend) == ["dog", "grass-merged", "person"]
    assert len({tuple(colour) for colour in legend.values()}) == 3
    axes = np.array(fig.axes).reshape(2, 3)
    for row in range(2):
        assert [ax.get_title() for ax in axes[row]] == ["image", "prediction", "ground truth"]
        np.testing.assert_array_equal(axes[row, 0].images[0].get_array(), images[row])
        for ax, labels in ((axes[row, 1], prediction[row]), (axes[row, 2], truth[row])):
            shown = ax.images[0]
            rgba = shown.to_rgba(shown.get_array())
            for class_id in np.unique(labels):
                expected = (0.0, 0.0, 0.0, 1.0) if class_id == 0 else legend[names[class_id]]
                np.testing.assert_allclose(
                    rgba[labels == class_id], np.broadcast_to(expected, (int((labels == class_id).sum()), 4))
                )
