"""Shared conventions of matplotlib figures: saving at display resolution, marking random-weight
figures, class colours and the shared plots (segmentation, metric summary, training curves).

Figures are written as :mod:`cliplens.figure_files` writes every figure: a PNG at 100 dpi with a
256-colour palette (pictures dithered), cropped to what is drawn; plots (no pictures; heatmaps
count as plots) also as PDF, whose vectors scale. Figures that show pictures (RGB images) are
raster by nature: PNG only unless :func:`cliplens.figure_files.set_gallery_pdf` asks for a PDF
beside it (config ``figures.gallery_pdf``; its rasters are lossless RGB). Grids of pictures
(galleries, overlays, neighbours) are drawn without matplotlib, as :mod:`cliplens.sheets`.
Importing the module selects matplotlib's Agg backend and applies :data:`STYLE`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")  # figures are files: no display needed, none opened
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.image import AxesImage
from matplotlib.patches import Patch
from matplotlib.transforms import Bbox
from PIL import Image

from cliplens.figure_files import (
    DPI,
    NOTE_POINTS,
    RANDOM_WEIGHTS_NOTE,
    STAMP_ALPHA,
    STAMP_DEGREES,
    STAMP_POINTS,
    write_figure_files,
)
from cliplens.metrics import as_numpy
from cliplens.runtime import saving_figure

STYLE: dict[str, Any] = {"axes.titley": 1.0, "text.hinting": "none"}
"""Matplotlib settings of every cliplens figure, each worth about a twentieth of a plot's drawing
time. Titles sit at the top of their axes: no cliplens figure puts tick labels above an axes, and
matplotlib's search for them measures every x tick label of every titled axes while drawing.
Glyphs are rasterised from their outlines without hinting, as a PDF viewer draws them (at
100 dpi a shade softer than hinted text)."""
plt.rcParams.update(cast(Any, STYLE))


def mark_random_weights(fig: plt.Figure) -> None:
    """Stamp a figure made with randomly initialised weights so nobody mistakes it for a finding."""
    fig.text(
        0.5,
        0.5,
        RANDOM_WEIGHTS_NOTE,
        ha="center",
        va="center",
        rotation=STAMP_DEGREES,
        fontsize=STAMP_POINTS,
        color="red",
        alpha=STAMP_ALPHA,
        weight="bold",
        zorder=1000,
    )
    # a plain line below the figure: titles and suptitles above stay as they are
    fig.text(0.5, 0.0, RANDOM_WEIGHTS_NOTE, ha="center", va="top", color="red", fontsize=NOTE_POINTS)


def save_figure(fig: plt.Figure, path: str | os.PathLike, random_weights: bool = False) -> list[Path]:
    """Save ``fig`` to ``path`` (PNG) and, for plots without pictures or when gallery PDFs are
    switched on, beside it as PDF, each via a temporary file; close it. Images are first reduced
    to the pixels they are drawn at (:func:`fit_images_to_display`); the layout runs once and each
    format is drawn once, both cropped to what the PNG's drawing holds
    (:func:`cliplens.figure_files.write_figure_files` writes them). Returns the written paths; the
    CPU time is counted in the job's last log line (:func:`cliplens.runtime.saving_figure`)."""
    with saving_figure():
        if random_weights:
            mark_random_weights(fig)
        pictures = fit_images_to_display(fig, DPI)
        _lay_out_once(fig)
        pixels, bbox = _render_cropped(fig)
        written = write_figure_files(
            path,
            pixels,
            pictures=bool(pictures),
            write_pdf=lambda tmp: fig.savefig(tmp, format="pdf", dpi=DPI, bbox_inches=bbox),
        )
        plt.close(fig)
    return written


def _lay_out_once(fig: plt.Figure) -> None:
    """Run the figure's layout engine once and freeze the positions it found, so that both formats
    crop to the same box. The engine is then removed: with any engine (even matplotlib's "none"
    placeholder) every ``savefig`` would first draw the whole figure once more. Figure legends are
    pinned to where they are: matplotlib anchors them to the figure's box, which it swaps for the
    saved crop while drawing."""
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)
    with plt.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)
    for legend in fig.legends:  # anchored to the figure, not to its box, which saving a crop replaces
        anchor = legend.get_bbox_to_anchor().transformed(fig.transFigure.inverted())
        legend.set_bbox_to_anchor(anchor, transform=fig.transFigure)


MARGIN_INCHES = (1.0, 1.0, 3.0, 1.0)
"""Room drawn around a figure (left, bottom, right, top) for what lies outside it: notes below it,
legends beside it (on the right, where figures put them)."""


def _render_cropped(fig: plt.Figure) -> tuple[Image.Image, Bbox]:
    """Draw ``fig`` once at :data:`DPI` with :data:`MARGIN_INCHES` around it and crop the pixels
    to what was drawn, padded by ``savefig.pad_inches``; returns them (RGB) and the same box in
    inches, for the PDF. This replaces matplotlib's tight box, which measures every artist in a
    pass of its own; where drawn pixels come closer than the padding to the margin's edge, the
    figure is measured that way after all and drawn again."""
    width, height = fig.get_size_inches()
    left, bottom, right, top = MARGIN_INCHES
    canvas = Bbox([[-left, -bottom], [width + right, height + top]])
    pad = plt.rcParams["savefig.pad_inches"]
    step = round(pad * DPI)
    rgba = _rendered(fig, canvas)
    pixels = np.asarray(rgba).view(np.uint32)[..., 0]  # one word per pixel
    drawn = pixels != pixels[0, 0]
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    if not rows.size:  # nothing drawn: the figure's own box
        bbox = fig.bbox_inches.padded(pad)
        return _rendered(fig, bbox).convert("RGB"), bbox
    crop = (cols[0] - step, rows[0] - step, cols[-1] + 1 + step, rows[-1] + 1 + step)
    if min(crop[:2]) < 0 or crop[2] > pixels.shape[1] or crop[3] > pixels.shape[0]:
        bbox = fig.get_tightbbox().padded(pad)  # drawn beyond the margin: measure every artist
        return _rendered(fig, bbox).convert("RGB"), bbox
    x0, y1 = canvas.x0 + crop[0] / DPI, canvas.y1 - crop[1] / DPI
    bbox = Bbox([[x0, y1 - (crop[3] - crop[1]) / DPI], [x0 + (crop[2] - crop[0]) / DPI, y1]])
    return rgba.crop(crop).convert("RGB"), bbox


def _rendered(fig: plt.Figure, bbox: Bbox) -> Image.Image:
    """The part ``bbox`` (inches) of ``fig`` drawn by Agg at :data:`DPI` (RGBA). The pixels reach
    PIL as an uncompressed TIFF (half the cost of an intermediate PNG)."""
    rendered = io.BytesIO()
    fig.savefig(rendered, format="tiff", dpi=DPI, bbox_inches=bbox)
    with Image.open(rendered) as image:
        image.load()
        return image


def fit_images_to_display(fig: plt.Figure, dpi: float) -> int:
    """Reduce every image drawn in ``fig`` to at most the pixels of its axes when saved at ``dpi``
    (area averaging; label maps drawn with nearest interpolation are subsampled); returns the
    number of pictures (RGB images) among them. Drawing, compressing and embedding then cost
    what the figure shows, not what the arrays hold.

    The axes are measured before any layout engine runs (no extra layout pass): layouts only
    shrink axes, so an image never ends up with fewer pixels than it is drawn at."""
    width, height = fig.get_size_inches() * dpi
    pictures = 0
    for axes in fig.axes:
        box = axes.get_position()
        size = (max(1, round(box.width * width)), max(1, round(box.height * height)))
        for image in axes.get_images():
            data = image.get_array()
            if data is None:
                continue
            pictures += data.ndim == 3
            if data.shape[1] > size[0] or data.shape[0] > size[1]:
                if axes.get_aspect() == "auto":  # stretched to the axes: each side on its own
                    target = (min(size[0], data.shape[1]), min(size[1], data.shape[0]))
                else:  # square pixels: both sides scale by the tighter fit
                    fit = min(size[0] / data.shape[1], size[1] / data.shape[0])
                    target = (max(1, round(data.shape[1] * fit)), max(1, round(data.shape[0] * fit)))
                image.set_data(_resized(np.asarray(data), target, image))
    return pictures


def _resized(data: np.ndarray, size: tuple[int, int], image: AxesImage) -> np.ndarray:
    """``data`` [H, W] or [H, W, C] resized to ``size`` (width, height): box filter, or nearest
    for images drawn with nearest interpolation (class indices)."""
    if image.get_interpolation() == "nearest":
        rows = (np.arange(size[1]) + 0.5) * data.shape[0] / size[1]
        cols = (np.arange(size[0]) + 0.5) * data.shape[1] / size[0]
        return data[rows.astype(int)][:, cols.astype(int)]
    planes = data[..., None] if data.ndim == 2 else data
    planes = planes if planes.dtype == np.uint8 else planes.astype(np.float32)  # Pillow modes L and F
    out = np.stack(
        [np.asarray(Image.fromarray(planes[..., c]).resize(size, Image.Resampling.BOX)) for c in range(planes.shape[-1])], -1
    )
    return out[..., 0] if data.ndim == 2 else out


def message_figure(message: str, path: str | os.PathLike, random_weights: bool = False) -> list[Path]:
    """A figure that only says why there is nothing to show."""
    fig, axis = plt.subplots(figsize=(6, 1.5))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return save_figure(fig, path, random_weights=random_weights)


CELL_INCHES = 1.6
"""Side of an image panel in figures of image grids: 160 px in the 100 dpi PNG."""


IGNORED_COLOUR = (0.0, 0.0, 0.0)


def class_palette(n_colours: int) -> list[tuple[float, float, float]]:
    """``n_colours`` distinct qualitative colours (tab20, tab20b, tab20c; cycled beyond 60)."""
    # tab20* are ListedColormaps whose .colors are RGB tuples (typed as a generic ArrayLike)
    colours = [c for name in ("tab20", "tab20b", "tab20c") for c in cast(Any, plt.get_cmap(name)).colors]
    return [tuple(colours[i % len(colours)]) for i in range(n_colours)]


def segmentation_figure(
    images: np.ndarray,
    predictions: np.ndarray,
    class_names: Mapping[int, str],
    path: str | os.PathLike,
    ground_truth: np.ndarray | None = None,
    ignore_index: int | None = 0,
    random_weights: bool = False,
) -> list[Path]:
    """Rows: images; columns: image, predicted labels (and ground truth), with a class legend.

    ``predictions`` / ``ground_truth`` are class-index maps ``[N, H, W]``; each class present
    gets its own colour, ``ignore_index`` is drawn black.
    """
    images, predictions = as_numpy(images), as_numpy(predictions)
    label_maps = {"prediction": predictions}
    if ground_truth is not None:
        label_maps["ground truth"] = as_numpy(ground_truth)
    present = np.unique(np.concatenate([m.ravel() for m in label_maps.values()]))
    present = present[present != ignore_index] if ignore_index is not None else present
    colours = dict(zip(present.tolist(), class_palette(len(present))))
    max_id = max(int(m.max()) for m in label_maps.values())
    colour_index = np.zeros(max_id + 1, dtype=np.int64)  # index 0 = ignored / black
    colour_index[present] = np.arange(1, len(present) + 1)
    colour_map = ListedColormap([IGNORED_COLOUR, *colours.values()])
    n_images, n_cols = predictions.shape[0], 1 + len(label_maps)
    fig, axes = plt.subplots(n_images, n_cols, figsize=(CELL_INCHES * n_cols + 2.5, CELL_INCHES * n_images), squeeze=False)
    for row in range(n_images):
        axes[row, 0].imshow(images[row])
        axes[row, 0].set_title("image", fontsize=8)
        for col, (title, labels) in enumerate(label_maps.items(), start=1):
            axes[row, col].imshow(colour_index[labels[row]], cmap=colour_map, vmin=0, vmax=len(colours), interpolation="nearest")
            axes[row, col].set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    handles = [Patch(color=c, label=class_names.get(i, str(i))) for i, c in colours.items()]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path, random_weights=random_weights)


def summary_figure(
    summary: pd.DataFrame,
    path: str | os.PathLike,
    group: str = "model",
    hue: str = "method",
    random_weights: bool = False,
) -> list[Path]:
    """One bar panel per metric: bars per ``group`` x ``hue`` with bootstrap CI error bars.

    ``summary`` is the output of :func:`cliplens.metrics.summarise` (``metric``, ``mean``,
    ``ci_low``, ``ci_high`` and the ``group`` / ``hue`` columns).
    """
    metrics = list(dict.fromkeys(summary["metric"]))
    groups, hues = list(dict.fromkeys(summary[group])), list(dict.fromkeys(summary[hue]))
    width = 0.8 / len(hues)
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(max(3.0, 0.6 * len(groups) * len(hues)) * len(metrics), 3.2), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics):
        rows = summary[summary["metric"] == metric].set_index([group, hue])
        for h, (hue_value, colour) in enumerate(zip(hues, class_palette(len(hues)))):
            table = rows.xs(hue_value, level=hue).reindex(groups)
            errors = np.stack([table["mean"] - table["ci_low"], table["ci_high"] - table["mean"]])
            ax.bar(
                np.arange(len(groups)) + (h - (len(hues) - 1) / 2) * width,
                table["mean"],
                width,
                yerr=errors,
                capsize=3,
                color=colour,
                label=str(hue_value),
            )
        ax.set_xticks(np.arange(len(groups)), [str(g) for g in groups], rotation=20, fontsize=8)
        ax.set_title(metric, fontsize=9)
    axes[0, -1].legend(fontsize=7, title=hue, title_fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, random_weights=random_weights)


def training_curve_figure(history: pd.DataFrame, path: str | os.PathLike) -> list[Path]:
    """Loss per step and, where evaluated, held-out zero-shot accuracy per attribute."""
    fig, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.5))
    loss_axis.plot(history["step"], history["loss"], linewidth=0.8)
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("contrastive loss")
    evaluated = history.dropna(axis=0, subset=[c for c in history.columns if c.startswith("accuracy_")][:1])
    for column in (c for c in history.columns if c.startswith("accuracy_")):
        accuracy_axis.plot(evaluated["step"], evaluated[column], marker="o", label=column.removeprefix("accuracy_"))
    accuracy_axis.set_xlabel("step")
    accuracy_axis.set_ylabel("held-out zero-shot accuracy")
    accuracy_axis.set_ylim(0, 1)
    accuracy_axis.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
