"""Shared figure conventions: saving as PNG + PDF atomically, and marking random-weight figures."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

from cliplens.files import atomic_output

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS - not a result about any trained CLIP model"


def mark_random_weights(fig: plt.Figure) -> None:
    """Stamp a figure made with randomly initialised weights so nobody mistakes it for a finding."""
    fig.text(
        0.5, 0.5, RANDOM_WEIGHTS_NOTE, ha="center", va="center", rotation=20, fontsize=14,
        color="red", alpha=0.35, weight="bold", zorder=1000,
    )
    # a plain line below the figure: titles and suptitles above stay as they are
    fig.text(0.5, 0.0, RANDOM_WEIGHTS_NOTE, ha="center", va="top", color="red", fontsize=9)


def save_figure(fig: plt.Figure, path: str | os.PathLike, random_weights: bool = False) -> list[Path]:
    """Save ``fig`` to ``path`` (PNG) and beside it as PDF, each via a temporary file; close it."""
    if random_weights:
        mark_random_weights(fig)
    png = Path(path)
    png.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for target in (png, png.with_suffix(".pdf")):
        with atomic_output(target) as tmp:
            fig.savefig(tmp, format=target.suffix.lstrip("."), dpi=120, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written
