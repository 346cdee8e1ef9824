"""What an embedding run did: counts, rejects, provenance and clean zero-shot accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cliplens.perturbation.statistics import per_image_metrics


def embedding_summary(
    manifest: pd.DataFrame,
    rejects: pd.DataFrame,
    rows: pd.DataFrame,
    embeddings: np.ndarray,
    text: np.ndarray,
    provenance: Mapping[str, Any],
    logit_scale: float,
) -> dict[str, Any]:
    """A JSON-ready record of one model x dataset embedding run (clean images)."""
    labelled = rows["label_index"].to_numpy() >= 0
    metrics = per_image_metrics(rows, embeddings, text, logit_scale) if len(text) > 1 else None
    return {
        "model": provenance.get("model"),
        "arch": provenance.get("arch"),
        "random_weights": bool(provenance.get("random_weights")),
        "weights": provenance.get("pretrained") or provenance.get("checkpoint") or "random init",
        "dataset": provenance.get("dataset"),
        "images_in_manifest": int(len(manifest)),
        "images_rejected": int(len(rejects)),
        "images_embedded": int(len(rows)),
        "labels": int(text.shape[0]),
        "embedding_dim": int(embeddings.shape[1]),
        "mean_norm": float(np.linalg.norm(embeddings, axis=1).mean()) if len(rows) else float("nan"),
        "zero_shot_top1": float(metrics["top1"][labelled].mean()) if metrics is not None and labelled.any() else None,
        "zero_shot_top5": float(metrics["top5"][labelled].mean()) if metrics is not None and labelled.any() else None,
        "open_clip_version": provenance.get("open_clip_version"),
        "torch_version": provenance.get("torch_version"),
    }


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as a short Markdown page."""
    lines = [f"# Embeddings: {summary['model']} on {summary['dataset']}", ""]
    if summary["random_weights"]:
        lines += ["**Random weights: these numbers say nothing about a trained CLIP model.**", ""]
    lines += ["| quantity | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in summary.items()]
    return "\n".join(lines) + "\n"
