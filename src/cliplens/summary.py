"""What an embedding run did: counts, rejects, provenance and clean zero-shot accuracy."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd


def zero_shot_accuracy(embeddings: np.ndarray, text: np.ndarray, label_index: np.ndarray, k: int = 1) -> float:
    """Top-k zero-shot accuracy over the labelled rows (label_index >= 0); NaN when none is labelled."""
    labelled = label_index >= 0
    if not labelled.any():
        return float("nan")
    scores = embeddings[labelled] @ text.T
    k = min(k, text.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == label_index[labelled, None]).any(axis=1).mean())


def embedding_summary(
    manifest: pd.DataFrame,
    rejects: pd.DataFrame,
    rows: pd.DataFrame,
    embeddings: np.ndarray,
    text: np.ndarray,
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """A JSON-ready record of one model x dataset embedding run (clean images)."""
    labels = rows["label_index"].to_numpy()
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
        "zero_shot_top1": zero_shot_accuracy(embeddings, text, labels, 1),
        "zero_shot_top5": zero_shot_accuracy(embeddings, text, labels, 5),
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
