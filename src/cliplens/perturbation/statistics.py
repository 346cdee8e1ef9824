"""Perturbation statistics: per-image metrics, bootstrap aggregates with paired tests, susceptibility.

Definitions of every quantity and column: docs/methods.md.
"""

from __future__ import annotations

import zlib
from typing import Literal

import numpy as np
import pandas as pd
from scipy import special

from cliplens.metrics import bootstrap_mean_ci, unit_rows
from cliplens.planning import CLEAN

ID_COLUMNS = ("model", "dataset")
"""Optional columns that identify an experiment; each present one is carried through and grouped on."""


METRICS = (
    "self_similarity",
    "alignment",
    "alignment_change",
    "top1",
    "top5",
    "top1_drop",
    "top5_drop",
    "rank",
    "margin",
    "true_prob",
)
"""Metrics ``aggregate`` summarises (``top1_drop``/``top5_drop`` are paired clean-minus-perturbed)."""


MIN_WILCOXON_PAIRS = 6
"""Fewest non-zero differences for which an exact two-sided signed-rank p-value can fall below 0.05."""


SUSCEPTIBILITY_METRICS = ("alignment_drop", "embedding_drop")


MAX_COSINE_DROP = 2.0
"""A drop between two cosines of unit vectors lies in [-2, 2]."""


_ROW_CHUNK = 16384


def id_columns(frame: pd.DataFrame) -> list[str]:
    """The optional experiment-identifying columns (model, dataset) that ``frame`` has."""
    return [column for column in ID_COLUMNS if column in frame.columns]


def clean_row_positions(records: pd.DataFrame) -> np.ndarray:
    """For every row, the position of the same image's clean row (same model/dataset if present)."""
    keys = id_columns(records) + ["image_id"]
    is_clean = (records["family"] == CLEAN).to_numpy()
    if (records.loc[is_clean, "severity"] != 0).any():
        raise ValueError("clean rows must have severity 0")
    clean = records.loc[is_clean, keys].assign(_clean_pos=np.flatnonzero(is_clean))
    if clean.duplicated(keys).any():
        raise ValueError(f"more than one clean row for some {keys}")
    positions = records[keys].merge(clean, on=keys, how="left")["_clean_pos"]
    if positions.isna().any():
        missing = records.loc[positions.isna().to_numpy(), "image_id"].unique()
        raise ValueError(f"{len(missing)} image(s) have no clean row, e.g. {list(missing[:5])}")
    return positions.to_numpy(dtype=np.int64)


def _zero_shot_metrics(similarity: np.ndarray, labels: np.ndarray, logit_scale: float) -> dict[str, np.ndarray]:
    """Zero-shot metrics (float64; NaN where unlabeled) from cosines [n, C] and labels [n] (-1 = unlabeled).

    rank = 1 + number of labels with a strictly larger logit (ties resolve in the true label's favour).
    """
    rows = np.arange(len(labels))
    nan_if_unlabeled = np.where(labels >= 0, 0.0, np.nan)
    true_index = np.maximum(labels, 0)
    cosine = similarity.astype(np.float64)
    logits = logit_scale * cosine
    true_logit = logits[rows, true_index]
    others = logits.copy()
    others[rows, true_index] = -np.inf
    return {
        "alignment": cosine[rows, true_index] + nan_if_unlabeled,
        "rank": 1.0 + (logits > true_logit[:, None]).sum(axis=1) + nan_if_unlabeled,
        "margin": true_logit - others.max(axis=1) + nan_if_unlabeled,
        "true_prob": np.exp(true_logit - special.logsumexp(logits, axis=1)) + nan_if_unlabeled,
        "prediction": logits.argmax(axis=1).astype(np.float64),
    }


def per_image_metrics(records: pd.DataFrame, embeddings: np.ndarray, text: np.ndarray, logit_scale: float) -> pd.DataFrame:
    """One row per record: ``records`` columns plus self-similarity, alignment and zero-shot metrics.

    ``embeddings`` [rows, D] is row-aligned with ``records``; ``text`` [C, D] holds the label embeddings.
    """
    if len(records) != len(embeddings):
        raise ValueError(f"{len(records)} records but {len(embeddings)} embeddings")
    if text.shape[0] < 2:
        raise ValueError("zero-shot metrics need at least two labels")
    labels = records["label_index"].to_numpy(dtype=np.int64)
    if (labels >= text.shape[0]).any():
        raise ValueError(f"label_index beyond the {text.shape[0]} text embeddings")
    image = unit_rows(embeddings)
    text = unit_rows(text)
    clean_pos = clean_row_positions(records)
    chunks = [
        _zero_shot_metrics(image[start : start + _ROW_CHUNK] @ text.T, labels[start : start + _ROW_CHUNK], logit_scale)
        for start in range(0, max(len(image), 1), _ROW_CHUNK)
    ]
    metric = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}
    out = records.reset_index(drop=True).copy()
    out["prediction"] = metric["prediction"].astype(np.int64)
    out["self_similarity"] = np.einsum("nd,nd->n", image, image[clean_pos]).astype(np.float64)
    out["alignment"] = metric["alignment"]
    out["alignment_clean"] = metric["alignment"][clean_pos]
    out["alignment_change"] = out["alignment"] - out["alignment_clean"]
    out["rank"] = pd.array(metric["rank"], dtype="Int64")
    out["top1"] = out["rank"] == 1
    out["top5"] = out["rank"] <= 5
    out["margin"] = metric["margin"]
    out["true_prob"] = metric["true_prob"]
    return out


def holm_adjust(pvalues: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries are not tests and stay NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    valid = np.isfinite(p)
    m = int(valid.sum())
    order = np.argsort(p[valid])
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[valid][order])
    valid_adjusted = np.empty(m)
    valid_adjusted[order] = np.minimum(stepped, 1.0)
    adjusted[valid] = valid_adjusted
    return adjusted


def paired_wilcoxon(differences: np.ndarray) -> tuple[float, float, str]:
    """Two-sided Wilcoxon signed-rank test of paired differences: (statistic, p, note); NaN when degenerate."""
    differences = differences[np.isfinite(differences)]
    nonzero = np.count_nonzero(differences)
    if len(differences) == 0:
        return np.nan, np.nan, "no labeled image pairs"
    if nonzero == 0:
        return np.nan, np.nan, "all differences zero"
    if nonzero < MIN_WILCOXON_PAIRS:
        return np.nan, np.nan, f"fewer than {MIN_WILCOXON_PAIRS} non-zero differences"
    from scipy import stats  # here: scipy.stats takes 0.4 s to import, and the figure jobs never test

    result = stats.wilcoxon(differences)
    return float(result.statistic), float(result.pvalue), ""


def _metric_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """Float64 metric columns of ``per_image`` (NaN = missing) plus paired top-k drops vs the clean row."""
    table = pd.DataFrame(
        {
            name: per_image[name].to_numpy(dtype=np.float64, na_value=np.nan)
            for name in METRICS
            if name not in ("top1_drop", "top5_drop")
        }
    )
    clean_pos = clean_row_positions(per_image)
    for k in ("top1", "top5"):
        table[f"{k}_drop"] = table[k].to_numpy()[clean_pos] - table[k]
    return table[list(METRICS)]


def _group_seed(seed: int, key: tuple) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the group's key (not on group order)."""
    return np.random.default_rng([seed, zlib.crc32("|".join(map(str, key)).encode())])


def aggregate(per_image: pd.DataFrame, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Per (model, dataset if present, family, severity): means, bootstrap CIs and a Holm-corrected paired test.

    The unit is the image: seeds are averaged per image before anything is summarised.
    """
    group_keys = id_columns(per_image) + ["family", "severity"]
    metric_table = _metric_table(per_image)
    per_seed = pd.concat([per_image[group_keys + ["image_id"]].reset_index(drop=True), metric_table], axis=1)
    images = (
        per_seed.groupby(group_keys + ["image_id"], sort=False)
        .agg(n_rows=("image_id", "size"), **{name: (name, "mean") for name in METRICS})
        .reset_index()
    )
    rows = []
    for key, group in images.groupby(group_keys, sort=True):
        values = group[list(METRICS)].to_numpy()
        low, high = bootstrap_mean_ci(values, n_boot, _group_seed(seed, key), confidence)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.nansum(values, axis=0) / np.isfinite(values).sum(axis=0)
        row = dict(
            zip(group_keys, key),
            n_rows=int(group["n_rows"].sum()),
            n_images=len(group),
            n_labeled=int(group["alignment"].notna().sum()),
        )
        for name, mean, lo, hi in zip(METRICS, means, low, high):
            row.update({f"{name}_mean": mean, f"{name}_ci_low": lo, f"{name}_ci_high": hi})
        if key[-2] == CLEAN:
            n_pairs, statistic, p_value, note = 0, np.nan, np.nan, "clean reference"
        else:
            differences = group["alignment_change"].to_numpy()
            n_pairs = int(np.isfinite(differences).sum())
            statistic, p_value, note = paired_wilcoxon(differences)
        row.update(wilcoxon_n=n_pairs, wilcoxon_statistic=statistic, wilcoxon_p=p_value, wilcoxon_note=note)
        rows.append(row)
    table = pd.DataFrame(rows)
    table["wilcoxon_p_holm"] = table.groupby(id_columns(per_image) + ["severity"])["wilcoxon_p"].transform(
        lambda p: holm_adjust(p.to_numpy())
    )
    order = group_keys[:-2] + ["_is_perturbed", "family", "severity"]
    table = table.assign(_is_perturbed=table["family"] != CLEAN).sort_values(order, kind="stable")
    columns = [c for c in table.columns if c not in ("wilcoxon_note", "wilcoxon_p_holm", "_is_perturbed")]
    return table[columns + ["wilcoxon_p_holm", "wilcoxon_note"]].reset_index(drop=True)


def susceptibility(
    per_image: pd.DataFrame, metric: Literal["alignment_drop", "embedding_drop"] = "alignment_drop"
) -> pd.DataFrame:
    """Per image x family: normalised area under the seed-averaged drop-over-severity curve.

    drop(s) = alignment_clean - alignment ("alignment_drop") or 1 - self_similarity ("embedding_drop"),
    with drop(0) = 0. ``susceptibility`` integrates max(drop, 0) and ``net_change`` the signed drop,
    both by the trapezoid rule over [0, S_f] (S_f = the family's largest severity) and divided by the
    largest possible area 2 * S_f; so susceptibility is in [0, 1] and net_change in [-1, 1].
    Images missing a severity of their family's grid get NaN.
    """
    if metric not in SUSCEPTIBILITY_METRICS:
        raise ValueError(f"metric must be one of {SUSCEPTIBILITY_METRICS}, not {metric!r}")
    keys = id_columns(per_image) + ["image_id", "family"]
    perturbed = per_image[per_image["family"] != CLEAN]
    if metric == "alignment_drop":
        drop = perturbed["alignment_clean"] - perturbed["alignment"]
    else:
        drop = 1.0 - perturbed["self_similarity"]
    drops = perturbed[keys + ["severity"]].assign(drop=drop.to_numpy()).dropna(subset=["drop"])
    curves = drops.groupby(keys + ["severity"])["drop"].mean()
    tables = []
    for _, family_curves in curves.groupby(level="family"):
        wide = family_curves.unstack("severity").sort_index(axis=1)
        if 0 not in wide.columns:
            wide.insert(0, 0, 0.0)
        severity = wide.columns.to_numpy(dtype=np.float64)
        max_area = MAX_COSINE_DROP * (severity[-1] - severity[0])
        curve = wide.to_numpy()
        tables.append(
            pd.DataFrame(
                {
                    "metric": metric,
                    "susceptibility": np.trapezoid(np.clip(curve, 0.0, None), severity, axis=1) / max_area,
                    "net_change": np.trapezoid(curve, severity, axis=1) / max_area,
                },
                index=wide.index,
            )
        )
    if not tables:
        return pd.DataFrame(columns=keys + ["metric", "susceptibility", "net_change"])
    return pd.concat(tables).reset_index()


def top_k(susceptibility_table: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k most susceptible and k most robust images per (model, dataset, family); ``which`` and ``rank`` added.

    Ties in susceptibility are broken by net_change, then image_id; images without a score are skipped.
    """
    groups = id_columns(susceptibility_table) + ["family"]
    scored = susceptibility_table.dropna(subset=["susceptibility"])
    picks = []
    for which, ascending in (("most_susceptible", False), ("most_robust", True)):
        ordered = scored.sort_values(
            groups + ["susceptibility", "net_change", "image_id"],
            ascending=[True] * len(groups) + [ascending, ascending, True],
            kind="stable",
        )
        chosen = ordered.groupby(groups, sort=False).head(k)
        picks.append(chosen.assign(which=which, rank=chosen.groupby(groups, sort=False).cumcount() + 1))
    return pd.concat(picks).sort_values(groups + ["which", "rank"], kind="stable").reset_index(drop=True)


def select_model(frame: pd.DataFrame, model: str | None) -> tuple[pd.DataFrame, str]:
    """Rows of one model (``model``, or the only one in the frame) and its name for titles."""
    if "model" not in frame.columns:
        return frame, model or "unnamed model"
    if model is None:
        models = frame["model"].unique()
        if len(models) != 1:
            raise ValueError(f"the table holds models {list(models)}: pass model=")
        model = str(models[0])
    return frame[frame["model"] == model], model
