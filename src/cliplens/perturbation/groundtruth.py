"""Ground truth of the planted-concept world for the perturbation analysis: zero-shot accuracy per
attribute (colour, shape, background) under every family x severity, and the stated expectations.

Definitions: docs/groundtruth.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cliplens.planning import CLEAN

ATTRIBUTES = ("colour", "shape", "background")
COLOUR_FAMILIES = ("grayscale", "hue_shift", "saturate", "invert")
"""Families that change colour and leave outlines alone."""
SHAPE_FAMILIES = ("gaussian_blur", "defocus_blur", "motion_blur", "pixelate", "elastic_transform", "patch_grid", "cutout")
"""Families that blur, displace or occlude outlines and leave colours mostly alone."""


def attribute_accuracy(
    rows: pd.DataFrame,
    embeddings: np.ndarray,
    manifest: pd.DataFrame,
    attribute_texts: Mapping[str, tuple[Sequence[str], np.ndarray]],
) -> pd.DataFrame:
    """Zero-shot accuracy per (family, severity, attribute) of stored image embeddings ``[M, D]``.

    ``attribute_texts[a]`` holds the values of attribute ``a`` and their normalised text embeddings
    ``[V, D]``; each image is predicted the value of highest cosine and compared with the manifest's.
    Columns: family, severity, attribute, accuracy, n, chance.
    """
    truth = manifest.set_index("image_id").loc[rows["image_id"]]
    frames = []
    for attribute, (values, text) in attribute_texts.items():
        predicted = np.asarray(values)[(embeddings @ np.asarray(text, np.float32).T).argmax(axis=1)]
        correct = pd.Series(predicted == truth[attribute].to_numpy(), name="accuracy")
        table = correct.groupby([rows["family"].to_numpy(), rows["severity"].to_numpy()]).agg(["mean", "size"])
        table = table.rename_axis(["family", "severity"]).reset_index().rename(columns={"mean": "accuracy", "size": "n"})
        frames.append(table.assign(attribute=attribute, chance=1.0 / len(values)))
    return pd.concat(frames, ignore_index=True)[["family", "severity", "attribute", "accuracy", "n", "chance"]]


def normalised_drops(table: pd.DataFrame) -> pd.DataFrame:
    """Per (family, attribute): the mean over severities of (clean - perturbed) / (clean - chance)."""
    clean = table[table["family"] == CLEAN].set_index("attribute")
    perturbed = table[table["family"] != CLEAN].copy()
    headroom = (clean["accuracy"] - clean["chance"]).where(lambda value: value > 0)  # NaN: clean is at chance
    perturbed["drop"] = (perturbed["attribute"].map(clean["accuracy"]) - perturbed["accuracy"]) / perturbed["attribute"].map(
        headroom
    )
    return perturbed.groupby(["family", "attribute"], sort=True)["drop"].mean().unstack("attribute")


def perturbation_expectations(table: pd.DataFrame) -> pd.DataFrame:
    """Colour families hurt colour more than shape; outline families hurt shape more than colour.

    Each family of the grid that belongs to one of the two groups gives one row: expectation,
    measured (the normalised drops), verdict.
    """
    drops = normalised_drops(table)
    rows = []
    for family in drops.index:
        if family in COLOUR_FAMILIES:
            hurt, spared = "colour", "shape"
        elif family in SHAPE_FAMILIES:
            hurt, spared = "shape", "colour"
        else:
            continue
        known = bool(np.isfinite(drops.loc[family, [hurt, spared]]).all())
        holds = drops.loc[family, hurt] > drops.loc[family, spared]
        rows.append(
            {
                "line": "perturbation",
                "expectation": f"{family} lowers {hurt} accuracy more than {spared} accuracy",
                "measured": f"normalised drop {hurt} {drops.loc[family, hurt]:.3f}, {spared} {drops.loc[family, spared]:.3f}",
                "verdict": ("holds" if holds else "does not hold") if known else "not testable (clean accuracy at chance)",
            }
        )
    return pd.DataFrame(rows, columns=["line", "expectation", "measured", "verdict"])
