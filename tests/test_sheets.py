"""Picture sheets: thumbnails pasted 1:1 at their cells, every caption inside the sheet, the
random-weights stamp, and the files of a picture (PNG; a lossless PDF only when asked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cliplens import figure_files, runtime, sheets

COLOURS = [(200, 30, 30), (30, 160, 30), (30, 30, 200), (220, 180, 20)]


@pytest.fixture(autouse=True)
def gallery_pdf_off():
    figure_files.set_gallery_pdf(False)
    yield
    figure_files.set_gallery_pdf(False)


def _sheet(title: str = "a title", random_weights: bool = False, columns: tuple[str, str] = ("clean", "blur")) -> sheets.Sheet:
    images = [[np.full((224, 160, 3), colour, dtype=np.uint8) for colour in COLOURS[row * 2 : row * 2 + 2]] for row in range(2)]
    return sheets.thumbnail_sheet(
        images,
        columns=list(columns),
        rows=["first row\nimg0", "second row\nimg1"],
        cells=[["0.100", "0.200"], ["0.300", "0.400"]],
        side=50,
        title=title,
        random_weights=random_weights,
    )


def test_thumbnails_are_pasted_whole_at_their_cells() -> None:
    sheet = _sheet()
    pixels = np.asarray(sheet.image)
    for row in range(2):
        for column in range(2):
            cell = sheet.mosaic[row * (50 + 22) : row * (50 + 22) + 50, column * 58 : column * 58 + 50]
            colour = COLOURS[row * 2 + column]
            assert (cell[:, 7:43] == colour).all()  # 224 x 160 fitted into 50 px: 36 px wide, centred
            # the thumbnail reaches the saved image unscaled: its colour covers exactly its pixels there
            assert (pixels == colour).all(axis=2).sum() == 36 * 50
    assert sheet.texts == (
        "a title",
        "clean",
        "blur",
        "first row\nimg0",
        "second row\nimg1",
        "0.100",
        "0.200",
        "0.300",
        "0.400",
    )


def test_columns_widen_to_captions_wider_than_a_thumbnail() -> None:
    narrow, wide = _sheet(), _sheet(columns=("clean", "a caption far wider than a thumbnail"))
    assert narrow.mosaic.shape[1] == 2 * 50 + sheets.GAP  # captions narrower than 50 px: thumbnail-wide columns
    caption = sheets.font(8).getlength("a caption far wider than a thumbnail")
    assert wide.mosaic.shape[1] >= 2 * caption + sheets.GAP  # both columns as wide as the widest caption
    column = (wide.mosaic.shape[1] - sheets.GAP) // 2
    inset = (column - 50) // 2
    assert (wide.mosaic[:50, inset + 7 : inset + 43] != 255).any(axis=2).all()  # the thumbnail in the middle of its column


@pytest.mark.parametrize("title", ["short", "a title far wider than the two thumbnails of this small sheet, " * 2])
def test_every_caption_lies_inside_the_sheet(title: str) -> None:
    sheet = _sheet(title, random_weights=True)  # the stamp across it too
    ink = (np.asarray(sheet.image) < 250).any(axis=2)
    rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    margin = sheets.PAD - 1  # antialiased edges may reach one pixel into the padding
    assert rows[0] >= margin and columns[0] >= margin
    assert rows[-1] < sheet.image.height - margin and columns[-1] < sheet.image.width - margin


def test_random_weights_stamp_the_sheet_in_red() -> None:
    def red(sheet: sheets.Sheet) -> int:
        pixels = np.asarray(sheet.image).astype(int)
        return int(((pixels[..., 0] > 200) & (pixels[..., 1] < 150) & (pixels[..., 2] < 150)).sum())

    plain, stamped = _sheet(), _sheet(random_weights=True)
    assert stamped.texts[-1] == figure_files.RANDOM_WEIGHTS_NOTE and figure_files.RANDOM_WEIGHTS_NOTE not in plain.texts
    assert red(stamped) > red(plain) + 500  # the note under the sheet, the stamp across it
    assert stamped.image.height > plain.image.height  # the note's line is added below


def test_a_sheet_is_saved_as_a_picture_and_counted(tmp_path: Path) -> None:
    sheet, saved_before = _sheet(), runtime.FIGURES_SAVED.count
    assert sheets.save_sheet(sheet, tmp_path / "sheet.png") == [tmp_path / "sheet.png"]
    assert runtime.FIGURES_SAVED.count == saved_before + 1
    with Image.open(tmp_path / "sheet.png") as png:
        assert png.mode == "P" and png.size == sheet.image.size
        drawn = np.asarray(png.convert("RGB"), dtype=np.float64)
    assert np.abs(drawn - np.asarray(sheet.image, dtype=np.float64)).mean() < 3  # 256 colours, dithered

    figure_files.set_gallery_pdf(True)
    assert sheets.save_sheet(sheet, tmp_path / "sheet.png") == [tmp_path / "sheet.png", tmp_path / "sheet.pdf"]
    pdf = (tmp_path / "sheet.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"/FlateDecode" in pdf and b"/DCTDecode" not in pdf  # lossless, not JPEG
    figure_files.set_gallery_pdf(False)  # switched off again: no PDF of the earlier run stays beside the PNG
    sheets.save_sheet(sheet, tmp_path / "sheet.png")
    assert not (tmp_path / "sheet.pdf").exists()


@pytest.mark.parametrize("cmap, limits", [("jet", (0.0, 1.0)), ("coolwarm", (-0.5, 0.5))])
def test_an_overlay_is_what_matplotlib_draws_for_a_translucent_map_over_an_image(
    tmp_path: Path, cmap: str, limits: tuple[float, float]
) -> None:
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    heat = rng.uniform(limits[0] - 0.2, limits[1] + 0.2, (40, 30))  # partly outside the limits: clipped
    fig = plt.figure(figsize=(30 / figure_files.DPI, 40 / figure_files.DPI), dpi=figure_files.DPI)
    axes = fig.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    axes.imshow(image, interpolation="nearest")
    axes.imshow(heat, cmap=cmap, alpha=0.5, vmin=limits[0], vmax=limits[1], interpolation="nearest")
    fig.savefig(tmp_path / "matplotlib.png", dpi=figure_files.DPI)
    plt.close(fig)
    theirs = np.asarray(Image.open(tmp_path / "matplotlib.png").convert("RGB"), dtype=int)
    ours = sheets.overlay(image, heat, cmap=cmap, alpha=0.5, vmin=limits[0], vmax=limits[1])
    assert ours.shape == theirs.shape and np.abs(ours.astype(int) - theirs).max() <= 2


def test_an_overlay_stretches_a_coarse_map_over_the_image() -> None:
    image = np.zeros((32, 32, 3))
    coarse = np.array([[0.0, 1.0], [0.0, 1.0]])  # left half cold, right half hot
    drawn = sheets.overlay(image, coarse, cmap="gray", alpha=1.0).astype(int)
    assert drawn.shape == (32, 32, 3)
    assert drawn[:, 0].max() < 40 and drawn[:, -1].min() > 215  # the map's range spans black to white
    assert (np.diff(drawn[0, :, 0]) >= 0).all()  # bilinear: rising from left to right
