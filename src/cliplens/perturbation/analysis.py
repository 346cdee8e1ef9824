"""The perturbation-analysis job: stream the embedding store family by family into the statistics.

Memory is bounded by the clean embeddings plus one family's embeddings, never the whole grid.

"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cliplens.io import read_embeddings, read_provenance
from cliplens.perturbation.drift import drift_distributions, drift_table, label_flips
from cliplens.perturbation.statistics import (
    aggregate,
    per_image_metrics,
    susceptibility,
    top_k,
)
from cliplens.planning import CLEAN

Paths = Sequence[str | os.PathLike]


@dataclass
class PerturbationTables:
    """Every table the statistics job writes."""

    per_image: pd.DataFrame
    aggregate: pd.DataFrame
    susceptibility: pd.DataFrame
    top_k: pd.DataFrame
    drift: dict[str, pd.DataFrame]
    flips: dict[str, pd.DataFrame]


def family_chunks(clean_files: Paths, family_files: Mapping[str, Paths]) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """Yield (records, embeddings) of the clean rows followed by one family's rows, family by family."""
    clean_rows, clean_embeddings = read_embeddings(list(clean_files))
    if not family_files:
        yield clean_rows, clean_embeddings
    for files in family_files.values():
        rows, embeddings = read_embeddings(list(files))
        yield pd.concat([clean_rows, rows], ignore_index=True), np.concatenate([clean_embeddings, embeddings])


def label_logit_scale(labels_file: str | os.PathLike) -> float:
    """The model's logit scale, recorded with its label embeddings."""
    return float(read_provenance(labels_file)["logit_scale"])


def perturbation_tables(
    clean_files: Paths,
    family_files: Mapping[str, Paths],
    labels_file: str | os.PathLike,
    drift_files: Mapping[str, str | os.PathLike],
    ids: Mapping[str, str],
    stats_cfg: Mapping,
) -> PerturbationTables:
    """Per-image metrics, aggregates, susceptibility and semantic drift of one model x dataset."""
    _, text = read_embeddings(labels_file)
    logit_scale = label_logit_scale(labels_file)
    drift_sets = {name: read_embeddings(path) for name, path in drift_files.items()}
    drift_parts: dict[str, list[pd.DataFrame]]
    per_image, drift_parts = [], {name: [] for name in drift_sets}
    for index, (records, embeddings) in enumerate(family_chunks(clean_files, family_files)):
        records = records.drop(columns=[c for c in ("model", "dataset", "perturbation", "shard") if c in records])
        records = records.assign(**ids)
        metrics = per_image_metrics(records, embeddings, text, logit_scale)
        per_image.append(metrics if index == 0 else metrics[metrics["family"] != CLEAN])
        for name, (label_rows, label_embeddings) in drift_sets.items():
            probs = drift_distributions(embeddings, label_embeddings, logit_scale)
            drift_parts[name].append(drift_table(records, probs, label_rows["label"].tolist()))
    per_image = pd.concat(per_image, ignore_index=True)
    aggregated = aggregate(per_image, n_boot=stats_cfg["n_boot"], seed=stats_cfg["seed"])
    susceptible = susceptibility(per_image, stats_cfg["susceptibility_metric"])
    drift_tables = {
        name: pd.concat(parts, ignore_index=True).drop_duplicates(
            subset=[*ids, "image_id", "family", "severity"], ignore_index=True
        )
        for name, parts in drift_parts.items()
    }
    return PerturbationTables(
        per_image=per_image,
        aggregate=aggregated,
        susceptibility=susceptible,
        top_k=top_k(susceptible, stats_cfg["top_k"]),
        drift=drift_tables,
        flips={name: label_flips(table) for name, table in drift_tables.items()},
    )
