"""Saving figures: images reduced to the pixels they are drawn at, PNG for pictures, PDF for plots."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.figure
import matplotlib.image
import matplotlib.layout_engine
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image
from skimage import data

from cliplens import figure_files, plotting


@pytest.fixture(autouse=True)
def gallery_pdf_off():
    """Every test starts (and leaves) with the default: no PDF beside pictures."""
    figure_files.set_gallery_pdf(False)
    yield
    figure_files.set_gallery_pdf(False)


def _photo_figure(photo: np.ndarray) -> plt.Figure:
    fig, axis = plt.subplots(figsize=(2.0, 2.0))
    axis.imshow(photo)
    axis.set_axis_off()
    return fig


def _psnr(first: np.ndarray, second: np.ndarray) -> float:
    return float(-10 * np.log10(((first - second) ** 2).mean()))


def test_pictures_are_reduced_to_their_drawn_pixels_and_look_the_same(tmp_path: Path) -> None:
    photo = data.astronaut()  # 512 x 512, drawn at 2 in x 100 dpi at most
    reference = _photo_figure(photo)
    reference.savefig(tmp_path / "reference.png", dpi=plotting.DPI, bbox_inches="tight")  # matplotlib resamples
    fig = _photo_figure(photo)
    assert plotting.fit_images_to_display(fig, plotting.DPI) == 1
    fig.savefig(tmp_path / "reduced.png", dpi=plotting.DPI, bbox_inches="tight")
    image = fig.axes[0].get_images()[0]
    drawn = image.get_window_extent().width * plotting.DPI / fig.dpi
    axes_pixels = fig.axes[0].get_position().width * fig.get_size_inches()[0] * plotting.DPI
    assert drawn <= image.get_array().shape[0] == image.get_array().shape[1] <= axes_pixels < 250  # never below drawn
    ours, theirs = (matplotlib.image.imread(tmp_path / f"{name}.png")[..., :3] for name in ("reduced", "reference"))
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).mean() < 3 / 255 and _psnr(ours, theirs) > 30
    plt.close("all")


def test_pngs_hold_a_palette_of_256_colours_close_to_the_rendering(tmp_path: Path) -> None:
    fig = _photo_figure(data.astronaut())
    plotting.fit_images_to_display(fig, plotting.DPI)
    fig.savefig(tmp_path / "rgb.png", dpi=plotting.DPI, bbox_inches="tight")
    plotting.save_figure(fig, tmp_path / "palette.png")
    with Image.open(tmp_path / "palette.png") as palette:
        assert palette.mode == "P" and len(palette.getcolors(256) or []) <= 256
        ours = np.asarray(palette.convert("RGB"), dtype=np.float64) / 255
    rgb = matplotlib.image.imread(tmp_path / "rgb.png")[..., :3]
    assert ours.shape == rgb.shape and _psnr(ours, rgb) > 30
    assert (tmp_path / "palette.png").stat().st_size < 0.6 * (tmp_path / "rgb.png").stat().st_size


def test_label_maps_are_subsampled_not_averaged() -> None:
    labels = np.repeat(np.repeat(np.arange(36).reshape(6, 6) * 7, 100, axis=0), 100, axis=1)  # 600 x 600
    fig, axis = plt.subplots(figsize=(2.0, 2.0))
    axis.imshow(labels, interpolation="nearest", cmap="tab20")
    assert plotting.fit_images_to_display(fig, plotting.DPI) == 0  # a label map is no picture
    reduced = np.asarray(axis.get_images()[0].get_array())
    assert reduced.shape[0] < 300 and set(np.unique(reduced)) == set(np.unique(labels))
    plt.close(fig)


def test_small_images_are_left_as_they_are() -> None:
    photo = data.astronaut()[::16, ::16]  # 32 x 32, drawn larger
    fig = _photo_figure(photo)
    assert plotting.fit_images_to_display(fig, plotting.DPI) == 1
    assert np.array_equal(fig.axes[0].get_images()[0].get_array(), photo)
    plt.close(fig)


def test_pictures_get_png_only_unless_asked_and_plots_always_get_pdf(tmp_path: Path) -> None:
    def plot() -> plt.Figure:
        fig, axis = plt.subplots()
        axis.plot([0, 1, 2], [1, 0, 2])
        return fig

    def heatmap() -> plt.Figure:
        fig, axis = plt.subplots()
        axis.imshow(np.arange(12.0).reshape(3, 4))
        return fig

    def suffixes(written: list[Path]) -> list[str]:
        assert all(path.is_file() and path.stat().st_size > 500 for path in written)
        return sorted(path.suffix for path in written)

    assert suffixes(plotting.save_figure(_photo_figure(data.astronaut()), tmp_path / "gallery.png")) == [".png"]
    assert suffixes(plotting.save_figure(plot(), tmp_path / "plot.png")) == [".pdf", ".png"]
    assert suffixes(plotting.save_figure(heatmap(), tmp_path / "heatmap.png")) == [".pdf", ".png"]
    figure_files.set_gallery_pdf(True)
    assert suffixes(plotting.save_figure(_photo_figure(data.astronaut()), tmp_path / "asked.png")) == [".pdf", ".png"]
    assert (tmp_path / "asked.pdf").read_bytes().startswith(b"%PDF")
    figure_files.set_gallery_pdf(False)  # switched off again: the redrawn gallery leaves no PDF of the earlier run
    assert suffixes(plotting.save_figure(_photo_figure(data.astronaut()), tmp_path / "asked.png")) == [".png"]
    assert not (tmp_path / "asked.pdf").exists()


def test_a_figure_is_laid_out_once_and_drawn_once_per_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def figure() -> plt.Figure:
        fig, axes = plt.subplots(1, 2, layout="constrained")
        for axis in axes:
            axis.plot([0, 1, 2], [1, 0, 2], label="a line with a long name")
            axis.set_title("a panel")
        fig.supxlabel("x")
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center")
        return fig

    reference = figure()
    reference.draw_without_rendering()  # matplotlib's own layout pass
    calls = {"draw": 0, "layout": 0}

    def counting(name, method):
        def wrapper(self, *args, **kwargs):
            calls[name] += 1
            return method(self, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(matplotlib.figure.Figure, "draw", counting("draw", matplotlib.figure.Figure.draw))
    engine = matplotlib.layout_engine.ConstrainedLayoutEngine
    monkeypatch.setattr(engine, "execute", counting("layout", engine.execute))
    fig = figure()
    assert [path.suffix for path in plotting.save_figure(fig, tmp_path / "plot.png")] == [".png", ".pdf"]
    assert calls == {"draw": 2, "layout": 1}  # no draw only to lay out or to measure
    for ours, theirs in zip(fig.axes, reference.axes):
        assert np.allclose(ours.get_position().bounds, theirs.get_position().bounds)
    plt.close("all")


def _pdf_size_in_pixels(path: Path) -> np.ndarray:
    """The page of a matplotlib PDF in pixels of the PNG (72 points per inch)."""
    box = re.search(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", path.read_bytes())
    assert box is not None
    return np.array([float(box[1]), float(box[2])]) * plotting.DPI / 72


@pytest.mark.parametrize("far_text", [False, True], ids=["within the margin", "beyond the margin"])
def test_the_crop_holds_everything_drawn_beside_the_figure_and_the_pdf_has_the_same_box(tmp_path: Path, far_text: bool) -> None:
    def figure() -> plt.Figure:
        fig, axis = plt.subplots(figsize=(3.0, 3.0))
        axis.plot([0, 1], [0, 1])
        fig.legend(["a legend beside the figure"], loc="center left", bbox_to_anchor=(1.0, 0.5))
        if far_text:  # further left than the margin drawn around the figure
            fig.text(-1.2, 0.5, "far out on the left")
        plotting.mark_random_weights(fig)  # a note below the figure
        return fig

    reference = figure()
    reference.savefig(tmp_path / "reference.png", dpi=plotting.DPI, bbox_inches="tight")  # matplotlib's tight crop
    plotting.save_figure(figure(), tmp_path / "ours.png")
    with Image.open(tmp_path / "ours.png") as ours, Image.open(tmp_path / "reference.png") as theirs:
        size = np.array(ours.size)
        assert np.abs(size - np.array(theirs.size)).max() <= 3  # the same box, give or take antialiased edges
    assert np.abs(_pdf_size_in_pixels(tmp_path / "ours.pdf") - size).max() <= 1
    plt.close("all")


def test_the_crop_moves_nothing_within_the_figure(tmp_path: Path) -> None:
    """Legends anchored to the figure stay where the layout put them (matplotlib anchors them to the
    figure's box, which saving a crop replaces)."""

    def figure() -> plt.Figure:
        fig, axis = plt.subplots(figsize=(4.0, 3.0))
        axis.plot([0, 1], [0, 1], label="a line")
        fig.legend(loc="upper left")  # anchored to the figure's box
        fig.legend(["anchored to a point"], loc="center", bbox_to_anchor=(0.6, 0.3))
        return fig

    figure().savefig(tmp_path / "whole.png", dpi=plotting.DPI)  # the whole figure, nothing cropped
    plotting.save_figure(figure(), tmp_path / "cropped.png")
    whole = matplotlib.image.imread(tmp_path / "whole.png")[..., :3].astype(np.float64)
    whole = np.pad(whole, ((20, 20), (20, 20), (0, 0)), constant_values=1.0)  # white beyond the figure's edge
    with Image.open(tmp_path / "cropped.png") as cropped:
        ours = np.asarray(cropped.convert("RGB"), dtype=np.float64) / 255
    height, width = ours.shape[:2]
    assert height <= whole.shape[0] and width <= whole.shape[1]
    differing = min(  # pixels far from the whole figure's at the best offset (the palette moves none far)
        (np.abs(whole[top : top + height, left : left + width] - ours).max(axis=2) > 0.25).sum()
        for top in range(whole.shape[0] - height + 1)
        for left in range(whole.shape[1] - width + 1)
    )
    assert differing == 0
    plt.close("all")


def test_the_style_is_applied_and_titles_sit_where_matplotlib_would_put_them() -> None:
    """:data:`plotting.STYLE` fixes titles at the top of their axes; for axes without tick labels
    above them (every cliplens figure) that is matplotlib's own automatic placement, pixel for pixel."""
    assert {key: plt.rcParams[key] for key in plotting.STYLE} == plotting.STYLE  # applied on import
    assert plotting.STYLE["axes.titley"] == 1.0

    def drawn(style: dict) -> np.ndarray:
        with plt.rc_context(style):
            fig, axes = plt.subplots(1, 2, figsize=(4, 2), sharey=True)
            for axis in axes:
                axis.plot([0, 1], [0, 1])
                axis.set_title("a title", fontsize=9)
                axis.set_xlabel("x")
            fig.canvas.draw()
            pixels = np.asarray(fig.canvas.buffer_rgba()).copy()
            plt.close(fig)
            return pixels

    assert np.array_equal(drawn({}), drawn({"axes.titley": None, "text.hinting": "none"}))
