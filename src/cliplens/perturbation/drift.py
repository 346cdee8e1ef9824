"""Semantic drift: how an image's softmax distribution over a controlled label set moves with severity.

Definitions of every quantity and column: docs/statistics.md.

"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from cliplens.metrics import unit_rows
from cliplens.perturbation.statistics import id_columns
from cliplens.planning import CLEAN

PROB_PREFIX = "p_"
"""Prefix of the per-label probability columns of a drift table: ``p_<label>``."""


def drift_distributions(embeddings: np.ndarray, drift_text: np.ndarray, logit_scale: float) -> np.ndarray:
    """Softmax over the drift labels of ``logit_scale * cos(image, label)``: probabilities [rows, T]."""
    similarity = unit_rows(embeddings) @ unit_rows(drift_text).T
    return special.softmax(logit_scale * similarity.astype(np.float64), axis=1)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits along the last axis (inputs renormalised to sum 1); in [0, 1]."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / p.sum(axis=-1, keepdims=True)
    q = q / q.sum(axis=-1, keepdims=True)
    mixture = (p + q) / 2.0
    nats = (special.rel_entr(p, mixture).sum(axis=-1) + special.rel_entr(q, mixture).sum(axis=-1)) / 2.0
    return np.clip(nats / np.log(2.0), 0.0, 1.0)


def probability_columns(label_names: Sequence[str]) -> list[str]:
    """Names of the probability columns of a drift table for these labels."""
    return [f"{PROB_PREFIX}{name}" for name in label_names]


def drift_label_names(drift: pd.DataFrame) -> list[str]:
    """The drift labels of a drift table, in column order."""
    return [column[len(PROB_PREFIX) :] for column in drift.columns if column.startswith(PROB_PREFIX)]


def drift_table(records: pd.DataFrame, probs: np.ndarray, label_names: Sequence[str]) -> pd.DataFrame:
    """Per image x family x severity (0 = the clean image, repeated for every family; seeds averaged):
    ``p_<label>`` columns, JS divergence from the clean distribution, top label and its probability."""
    if len(records) != len(probs) or probs.shape[1] != len(label_names):
        raise ValueError(f"probs {probs.shape} does not match {len(records)} records x {len(label_names)} labels")
    if len(set(label_names)) != len(label_names):
        raise ValueError("drift label names must be unique")
    image_keys = id_columns(records) + ["image_id"]
    columns = probability_columns(label_names)
    rows = pd.concat(
        [records[image_keys + ["family", "severity"]].reset_index(drop=True), pd.DataFrame(probs, columns=columns)],
        axis=1,
    )
    means = (
        rows.groupby(image_keys + ["family", "severity"], sort=False)
        .agg(n_seeds=("image_id", "size"), **{column: (column, "mean") for column in columns})
        .reset_index()
    )
    is_clean = means["family"] == CLEAN
    clean = means.loc[is_clean].drop(columns=["family", "severity"])
    perturbed = means.loc[~is_clean]
    clean_per_family = perturbed[image_keys + ["family"]].drop_duplicates().merge(clean, on=image_keys)
    table = pd.concat([clean_per_family.assign(severity=0), perturbed], ignore_index=True)
    table = table.sort_values(image_keys + ["family", "severity"], kind="stable").reset_index(drop=True)
    reference = table[image_keys].merge(clean[image_keys + columns], on=image_keys, how="left")[columns]
    if reference.isna().any().any():
        raise ValueError("some perturbed images have no clean row")
    distribution = table[columns].to_numpy()
    table["js_divergence"] = js_divergence(distribution, reference.to_numpy())
    table["top_label"] = np.asarray(label_names, dtype=object)[distribution.argmax(axis=1)]
    table["top_prob"] = distribution.max(axis=1)
    return table[image_keys + ["family", "severity", "n_seeds"] + columns + ["js_divergence", "top_label", "top_prob"]]


def label_flips(drift: pd.DataFrame) -> pd.DataFrame:
    """Per image x family: the clean top label, the first severity whose top label differs, and that label.

    ``flip_severity`` is <NA> and ``flipped_to`` None when the top label never changes.
    """
    keys = id_columns(drift) + ["image_id", "family"]
    ordered = drift.sort_values(keys + ["severity"], kind="stable")
    clean_label = ordered.loc[ordered["severity"] == 0, keys + ["top_label"]]
    clean_label = clean_label.rename(columns={"top_label": "clean_label"})
    compared = ordered.merge(clean_label, on=keys)
    flips = compared[compared["top_label"] != compared["clean_label"]].groupby(keys, sort=False).first()
    flips = flips[["severity", "top_label"]].rename(columns={"severity": "flip_severity", "top_label": "flipped_to"})
    table = clean_label.merge(flips.reset_index(), on=keys, how="left")
    table["flip_severity"] = table["flip_severity"].astype("Int64")
    table["flipped_to"] = table["flipped_to"].astype(object).where(table["flipped_to"].notna(), None)
    return table.reset_index(drop=True)


@dataclass(frozen=True)
class Trajectories:
    """A 2-D principal-component projection of drift distributions (rows of a drift table)."""

    coords: pd.DataFrame
    """The drift table's key columns plus ``pc1``, ``pc2``."""
    components: np.ndarray
    """[2, T] principal axes in probability space."""
    mean: np.ndarray
    """[T] mean distribution the axes are centred on."""
    explained_variance_ratio: np.ndarray
    """[2] share of the total variance along each axis."""
    label_names: list[str]

    def project(self, probs: np.ndarray) -> np.ndarray:
        """Coordinates [n, 2] of distributions [n, T] (e.g. ``np.eye(T)``: the pure-label vertices)."""
        return (np.asarray(probs, dtype=np.float64) - self.mean) @ self.components.T


def drift_trajectories(drift: pd.DataFrame) -> Trajectories:
    """PCA (numpy SVD) of all probability vectors in ``drift``; each image's path over severity in 2-D."""
    label_names = drift_label_names(drift)
    if len(label_names) < 2:
        raise ValueError("trajectories need at least two drift labels")
    probs = drift[probability_columns(label_names)].to_numpy(dtype=np.float64)
    mean = probs.mean(axis=0)
    _, singular, axes = np.linalg.svd(probs - mean, full_matrices=False)
    components = np.zeros((2, len(label_names)))
    components[: min(2, len(axes))] = axes[:2]
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    variance = np.zeros(2)
    variance[: min(2, len(singular))] = singular[:2] ** 2
    total = float((singular**2).sum())
    ratio = variance / total if total > 0 else variance
    keys = id_columns(drift) + ["image_id", "family", "severity"]
    coords = drift[keys].reset_index(drop=True)
    coords[["pc1", "pc2"]] = (probs - mean) @ components.T
    return Trajectories(coords, components, mean, ratio, label_names)
