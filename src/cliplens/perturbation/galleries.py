"""Pictures of the perturbation analysis: a family's preview and each model's susceptibility gallery,
drawn as sheets of thumbnails (:mod:`cliplens.sheets`, Pillow; no matplotlib) and saved as PNG (PDF
too when ``figures.gallery_pdf`` asks). Each function saves its sheet and returns it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from cliplens.perturbation.statistics import select_model
from cliplens.planning import CLEAN
from cliplens.sheets import Sheet, save_sheet, thumbnail_sheet

ImageSource = Mapping[tuple[str, int], np.ndarray] | Callable[[str, int], np.ndarray]
"""The HxWx3 image of ``(image_id, severity)`` for the figure's family (severity 0 = clean)."""

THUMBNAIL_SIDE = 100
"""Side of a gallery cell in pixels of the 100 dpi PNG (the gallery shows trends, not pixels)."""

PREVIEW_SIDE = 170
"""Side of a preview panel: close to the 224 px the embedding step sees."""


def _image_at(images: ImageSource, image_id: str, severity: int) -> np.ndarray:
    """The image of ``(image_id, severity)`` from a mapping or a callable."""
    return images[(image_id, severity)] if isinstance(images, Mapping) else images(image_id, severity)


def _cell_values(per_image: pd.DataFrame, family: str, metric: str) -> pd.Series:
    """Seed-averaged ``metric`` per (image_id, severity) of ``family``, severity 0 from the clean rows."""
    rows = per_image[per_image["family"].isin([family, CLEAN])]
    return rows.groupby(["image_id", "severity"])[metric].mean()


def plot_susceptibility_gallery(
    top: pd.DataFrame,
    images: ImageSource,
    path: str | os.PathLike,
    *,
    family: str,
    severities: Sequence[int],
    dataset: str,
    random_weights: bool,
    model: str | None = None,
    per_image: pd.DataFrame | None = None,
    cell_metric: str = "alignment",
) -> Sheet:
    """Rows: the family's most susceptible then most robust images (``top_k`` output); columns: severities.

    Row labels give rank, image id and susceptibility; with ``per_image`` each cell shows ``cell_metric``.
    """
    table, model = select_model(top, model)
    # "most_susceptible" sorts after "most_robust": descending puts the susceptible rows first
    table = table[table["family"] == family].sort_values(["which", "rank"], ascending=[False, True])
    if table.empty:
        raise ValueError(f"no top-k rows for family {family!r}")
    if per_image is not None:
        per_image, _ = select_model(per_image, model if "model" in per_image.columns else None)
        cells = _cell_values(per_image, family, cell_metric)
    labels = [
        [
            f"{cells[(row.image_id, s)]:.3f}" if per_image is not None and (row.image_id, s) in cells.index else ""
            for s in severities
        ]
        for row in table.itertuples(index=False)
    ]
    metric = table["metric"].iloc[0] if "metric" in table.columns else "drop"
    cells_named = f"\nunder each image: its {cell_metric}" if per_image is not None else ""
    sheet = thumbnail_sheet(
        [[_image_at(images, row.image_id, severity) for severity in severities] for row in table.itertuples(index=False)],
        columns=["clean" if severity == 0 else f"severity {severity}" for severity in severities],
        rows=[
            f"{row.which.replace('_', ' ')} #{row.rank}\n{row.image_id}\nscore {row.susceptibility:.3f}"
            for row in table.itertuples(index=False)
        ],
        cells=labels,
        side=THUMBNAIL_SIDE,
        title=f"Susceptibility to {family} ({metric}, normalised AUC){cells_named}\nmodel: {model}   dataset: {dataset}",
        random_weights=random_weights,
    )
    save_sheet(sheet, path)
    return sheet


def plot_family_preview(
    images: Mapping[tuple[str, int], np.ndarray],
    image_id: str,
    family: str,
    path: str | os.PathLike,
    parameters: Mapping[str, Sequence] | None = None,
) -> Sheet:
    """One image under one family at every severity it has in ``images`` (0 = clean), with the parameters."""
    severities = sorted(severity for key, severity in images if key == image_id)
    titles = [
        f"severity {severity}\n" + ", ".join(f"{name}={vals[severity - 1]:g}" for name, vals in (parameters or {}).items())
        if severity
        else "clean"
        for severity in severities
    ]
    sheet = thumbnail_sheet(
        [[images[(image_id, severity)] for severity in severities]],
        titles,
        side=PREVIEW_SIDE,
        title=f"{family} on {image_id}",
    )
    save_sheet(sheet, path)
    return sheet
