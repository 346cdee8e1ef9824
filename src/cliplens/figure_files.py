"""The files of a drawn figure, whatever drew it (matplotlib plots in :mod:`cliplens.plotting`,
Pillow picture sheets in :mod:`cliplens.sheets`): a PNG at :data:`DPI` with a 256-colour palette
and, beside it, a PDF where one is wanted, each written through a temporary file. Imports neither
matplotlib nor torch, so that a job drawing only pictures starts without them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from cliplens.io import atomic_output

DPI = 100
"""Pixels per inch of every PNG."""

RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS - not a result about any trained CLIP model"
"""Said on every figure drawn with random weights: stamped across it and in a line under it."""

STAMP_POINTS, STAMP_DEGREES, STAMP_ALPHA = 14, 20, 0.35
"""The stamp across a random-weights figure: bold, its size in points, turned, translucent."""

NOTE_POINTS = 9
"""Size of the random-weights line under a figure, in points."""

_OUTPUT = {"gallery_pdf": False}


def set_gallery_pdf(enabled: bool) -> None:
    """Also write a PDF beside the PNG of figures that show images (config ``figures.gallery_pdf``;
    a script calls this once before drawing)."""
    _OUTPUT["gallery_pdf"] = bool(enabled)


def write_figure_files(
    path: str | os.PathLike, rgb: Image.Image, *, pictures: bool, write_pdf: Callable[[Path], None]
) -> list[Path]:
    """Write ``rgb`` to ``path`` as a palette PNG and, for a plot (no ``pictures``) or when gallery
    PDFs are switched on, the PDF beside it through ``write_pdf(temporary path)``; a PDF left
    beside the PNG by an earlier run is removed when none is written. Returns the written paths."""
    png = Path(path)
    targets = [png] + ([png.with_suffix(".pdf")] if not pictures or _OUTPUT["gallery_pdf"] else [])
    for target in targets:
        with atomic_output(target) as tmp:
            if target.suffix == ".png":
                _write_palette_png(rgb, tmp, dither=pictures)
            else:
                write_pdf(tmp)
    if len(targets) == 1:  # a PDF from when gallery PDFs were switched on is no longer this figure
        png.with_suffix(".pdf").unlink(missing_ok=True)
    return targets


def _write_palette_png(rgb: Image.Image, path: Path, dither: bool) -> None:
    """``rgb`` as a PNG of 256 colours: an adaptive palette, then, for pictures (``dither``),
    Floyd-Steinberg dithering to it (a third to a fifth of the bytes of RGB, so that a report of
    many galleries stays small). Plots are not dithered: their colours are few (a colour map has
    256) and error diffusion would only speckle their flat areas."""
    palette = rgb.quantize(256, method=Image.Quantize.FASTOCTREE)
    if dither:
        palette = rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    palette.save(path, format="PNG", compress_level=6)


def fit_image(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` [H, W, 3] (uint8, or float in [0, 1]) fitted into a white ``side`` x ``side`` uint8
    square: aspect kept, centred, reduced by area averaging (enlarged by nearest neighbour)."""
    pixels = np.asarray(image)[..., :3]
    if pixels.dtype != np.uint8:
        pixels = (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)
    height, width = pixels.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.NEAREST
    fitted = np.asarray(Image.fromarray(pixels).resize(size, resample))
    square = np.full((side, side, 3), 255, dtype=np.uint8)
    top, left = (side - size[1]) // 2, (side - size[0]) // 2
    square[top : top + size[1], left : left + size[0]] = fitted
    return square
