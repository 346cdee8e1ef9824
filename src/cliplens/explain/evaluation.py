"""Deletion / insertion evaluation of stored maps (no masks needed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from cliplens.images import load_pixels, square_transform
from cliplens.metrics import deletion_insertion
from cliplens.models import LoadedModel
from cliplens.stored_maps import ExplanationScores


def deletion_insertion_scores(
    loaded: LoadedModel,
    explanations: ExplanationScores,
    rows: pd.DataFrame,
    cfg: Mapping[str, Any],
    batch_size: int = 32,
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Deletion/insertion AUC per (image, method) for each image's top class (zero-shot on the clean image).

    The score is the cosine similarity between the modified image's embedding and the target text.
    """
    transform = square_transform(cfg["image_size"], cfg["resize_mode"])
    pixels = load_pixels(loaded, rows, explanations.image_ids, transform, cfg["image_size"])
    text = torch.from_numpy(explanations.text).to(loaded.device)

    def embed(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), loaded.autocast():
            return F.normalize(cast(Any, loaded.model).encode_image(TF.normalize(batch, loaded.mean, loaded.std)).float(), dim=-1)

    target = (embed(pixels) @ text.T).argmax(dim=1)
    tables, curves = [], {}
    for method in explanations.scores:
        maps = explanations.pair_maps(method, range(len(target)), target.cpu().numpy())
        deletion, insertion, method_curves = deletion_insertion(
            pixels,
            torch.from_numpy(maps).to(pixels.device),
            lambda batch, index: (embed(batch) * text[target[index]]).sum(dim=1),
            steps=cfg["evaluation"]["deletion_steps"],
            batch_size=batch_size,
        )
        curves[method] = method_curves
        tables.append(
            pd.DataFrame(
                {
                    "method": method,
                    "image_id": explanations.image_ids,
                    "target": np.asarray(explanations.labels)[target.cpu().numpy()],
                    "deletion_auc": deletion,
                    "insertion_auc": insertion,
                }
            )
        )
    return pd.concat(tables, ignore_index=True), curves
