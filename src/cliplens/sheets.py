"""Picture sheets: thumbnails in a grid with their captions, drawn with Pillow.

A gallery is pictures and text, not data in axes. Drawn by matplotlib, each of its few dozen
captions went through the artist machinery and the thumbnails through an image resampling pass,
about 0.2 CPU seconds per gallery; Pillow pastes the thumbnails 1:1 and draws the captions with
the same font as the plots (DejaVu Sans, from matplotlib's data, which is read without importing
matplotlib) in milliseconds. Sizes are pixels of the 100 dpi PNG
(:data:`cliplens.figure_files.DPI`); font sizes are points, as in the plots. Saved like every
figure (:func:`cliplens.figure_files.write_figure_files`): a dithered palette PNG, and a lossless
PDF only when ``figures.gallery_pdf`` asks for one.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cliplens.figure_files import (
    DPI,
    NOTE_POINTS,
    RANDOM_WEIGHTS_NOTE,
    STAMP_ALPHA,
    STAMP_DEGREES,
    STAMP_POINTS,
    fit_image,
    write_figure_files,
)
from cliplens.runtime import saving_figure

PAD = 10
"""Blank pixels around a sheet (the plots' ``savefig.pad_inches`` of 0.1 inch)."""

GAP = 8
"""Pixels between two thumbnails."""

CELL_TEXT_HEIGHT = 22
"""Pixels under each thumbnail that hold its line of text, when cells have text."""

LINE_SPACING = 2
"""Pixels between the lines of a caption."""

RED = (255, 0, 0)


@dataclass(frozen=True)
class Sheet:
    """A drawn sheet: ``image`` (RGB) as it is saved, ``mosaic`` the grid of thumbnails in it (uint8;
    columns as wide as the thumbnail or the widest caption, whichever is more, each thumbnail in the
    middle of its column, :data:`GAP` between columns) and ``texts`` every caption drawn, title first."""

    image: Image.Image
    mosaic: np.ndarray
    texts: tuple[str, ...]


@functools.cache
def font(points: float, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (the plots' font, shipped with matplotlib) at ``points`` in the 100 dpi PNG."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("matplotlib, whose DejaVu Sans the sheets use, is not installed")
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / name, size=points * DPI / 72)


_MEASURE = ImageDraw.Draw(Image.new("L", (1, 1)))


def _text_mask(text: str, typeface: ImageFont.FreeTypeFont) -> Image.Image:
    """``text`` (lines centred) as a tight coverage mask ("L")."""
    box = _MEASURE.multiline_textbbox((0, 0), text, font=typeface, align="center", spacing=LINE_SPACING)
    left, top, right, bottom = math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3])
    mask = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(mask).multiline_text((-left, -top), text, font=typeface, fill=255, align="center", spacing=LINE_SPACING)
    return mask


def _paste(
    canvas: Image.Image, mask: Image.Image, x: float, y: float, ha: str, va: str, colour: tuple[int, int, int] = (0, 0, 0)
) -> None:
    """Ink ``mask`` onto ``canvas`` in ``colour``, placed at (``x``, ``y``) by its ``ha`` (left,
    center, right) and ``va`` (top, center, bottom) edge."""
    left = {"left": x, "center": x - mask.width / 2, "right": x - mask.width}[ha]
    top = {"top": y, "center": y - mask.height / 2, "bottom": y - mask.height}[va]
    canvas.paste(colour, (round(left), round(top)), mask)


def _stamp() -> Image.Image:
    """The random-weights note across a sheet, as on the plots (:mod:`cliplens.figure_files`)."""
    turned = _text_mask(RANDOM_WEIGHTS_NOTE, font(STAMP_POINTS, bold=True)).rotate(
        STAMP_DEGREES, expand=True, resample=Image.Resampling.BICUBIC
    )
    return turned.point(lambda value: round(value * STAMP_ALPHA))


def thumbnail_sheet(
    images: Sequence[Sequence[np.ndarray]],
    columns: Sequence[str],
    rows: Sequence[str] | None = None,
    cells: Sequence[Sequence[str]] | None = None,
    *,
    side: int = 100,
    title: str = "",
    random_weights: bool = False,
) -> Sheet:
    """Thumbnails ``images[row][column]``, each fitted into a ``side`` px square
    (:func:`cliplens.figure_files.fit_image`), under a bold ``title`` with a caption per column,
    when given a label per row (left, turned upright) and a line of text under each cell.
    ``random_weights`` stamps the sheet across its middle (the sheet at least as large as the stamp)
    and adds a line under it, as on the plots."""
    heading = _text_mask(title, font(12, bold=True)) if title else None
    column_masks = [_text_mask(text, font(8)) for text in columns]
    row_masks = [_text_mask(text, font(7)).rotate(90, expand=True) for text in rows or []]
    cell_masks = [[_text_mask(text, font(6.5)) for text in row] for row in cells or []]
    note = _text_mask(RANDOM_WEIGHTS_NOTE, font(NOTE_POINTS)) if random_weights else None
    stamp = _stamp() if random_weights else None
    captions = [*column_masks, *(mask for row in cell_masks for mask in row)]
    column_width = max([side, *(mask.width + 4 for mask in captions)])  # captions never overlap
    pitch_x, pitch_y = column_width + GAP, side + (CELL_TEXT_HEIGHT if cells else GAP)
    inset = (column_width - side) // 2  # a thumbnail sits in the middle of its column
    mosaic = np.full((len(images) * pitch_y, len(columns) * pitch_x - GAP, 3), 255, dtype=np.uint8)
    for r, row_images in enumerate(images):
        for c, image in enumerate(row_images):
            left = c * pitch_x + inset
            mosaic[r * pitch_y : r * pitch_y + side, left : left + side] = fit_image(image, side)

    row_band = max((mask.width for mask in row_masks), default=-6) + 6
    block_width = row_band + mosaic.shape[1]  # row labels and thumbnails
    width = 2 * PAD + max(block_width, heading.width if heading else 0, note.width if note else 0, stamp.width if stamp else 0)
    heading_band = heading.height + 8 if heading else 0
    mosaic_top = PAD + heading_band + max((mask.height for mask in column_masks), default=0) + 4
    height = max(mosaic_top + mosaic.shape[0] + (note.height + 6 if note else 0) + PAD, stamp.height + 2 * PAD if stamp else 0)
    mosaic_left = (width - block_width) // 2 + row_band

    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(Image.fromarray(mosaic), (mosaic_left, mosaic_top))
    if heading:
        _paste(canvas, heading, width / 2, PAD, "center", "top")
    for c, mask in enumerate(column_masks):
        _paste(canvas, mask, mosaic_left + c * pitch_x + column_width / 2, mosaic_top - 4, "center", "bottom")
    for r, mask in enumerate(row_masks):
        _paste(canvas, mask, mosaic_left - 6, mosaic_top + r * pitch_y + side / 2, "right", "center")
    for r, row in enumerate(cell_masks):
        for c, mask in enumerate(row):
            _paste(
                canvas, mask, mosaic_left + c * pitch_x + column_width / 2, mosaic_top + r * pitch_y + side + 2, "center", "top"
            )
    if note:
        _paste(canvas, note, width / 2, mosaic_top + mosaic.shape[0] + 6, "center", "top", RED)
    if stamp:
        _paste(canvas, stamp, width / 2, height / 2, "center", "center", RED)
    texts = (
        *([title] if title else []),
        *columns,
        *(rows or []),
        *(text for row in cells or [] for text in row),
        *([RANDOM_WEIGHTS_NOTE] if random_weights else []),
    )
    return Sheet(canvas, mosaic, texts)


CELL_SIDE = 110
"""Side of an image cell in sheets of full images (overlays, neighbours), in pixels: about what an
image got in a matplotlib grid of 1.6-inch panels once titles and spacing took their share."""


def overlay(
    image: np.ndarray,
    heat: np.ndarray,
    *,
    cmap: str = "jet",
    alpha: float = 0.5,
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """``image`` [H, W, 3] (uint8, or float in [0, 1]) under ``heat`` [h, w] (stretched to H x W,
    bilinear, where the sizes differ) coloured by the matplotlib colour map ``cmap`` between ``vmin``
    and ``vmax`` (default: the map's range) at opacity ``alpha``: what matplotlib draws for an image
    shown under a translucent map, as uint8 [H, W, 3]."""
    from matplotlib import colormaps  # the colour maps only, not pyplot

    base = np.asarray(image)[..., :3]
    base = base / 255.0 if base.dtype == np.uint8 else np.clip(base, 0.0, 1.0)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != base.shape[:2]:
        heat = np.asarray(Image.fromarray(heat).resize(base.shape[1::-1], Image.Resampling.BILINEAR))
    low = float(heat.min()) if vmin is None else vmin
    high = float(heat.max()) if vmax is None else vmax
    scaled = np.clip((heat - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(heat)
    blended = (1 - alpha) * base + alpha * colormaps[cmap](scaled)[..., :3]
    return (blended * 255).round().astype(np.uint8)


def save_sheet(sheet: Sheet, path: str | os.PathLike) -> list[Path]:
    """Write ``sheet`` as a figure of pictures: its PNG and, when gallery PDFs are switched on, a
    PDF holding the same pixels losslessly. Counted like every saved figure
    (:func:`cliplens.runtime.saving_figure`)."""
    with saving_figure():
        return write_figure_files(path, sheet.image, pictures=True, write_pdf=lambda tmp: _lossless_pdf(sheet.image, tmp))


def _lossless_pdf(image: Image.Image, path: Path) -> None:
    """``image`` as a one-page PDF at :data:`DPI`, its pixels Flate-compressed (Pillow's own PDF
    writer would store them as JPEG). Imports matplotlib only here, where a PDF is asked for."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(image.width / DPI, image.height / DPI), dpi=DPI)
    figure.figimage(np.asarray(image), origin="upper")
    figure.savefig(path, format="pdf", dpi=DPI)
