"""The explanation methods of this line behind the one map signature of :mod:`cliplens.maps`:
raw CLIP, CLIP Surgery and Grad-CAM; scores of a dataset and maps of free-text prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from cliplens.explain.gradcam import gradcam
from cliplens.explain.surgery import (
    ResnetSurgery,
    feature_surgery,
    image_tokens_and_grid,
    raw_similarity,
    single_prompt_surgery,
)
from cliplens.images import iterate_batches, square_transform
from cliplens.maps import method_scores, register, render_scores, stored_scores
from cliplens.models import LoadedModel
from cliplens.stored_maps import ExplanationScores
from cliplens.text import label_features
from cliplens.towers import patch_grid


def _token_scores(
    loaded: LoadedModel,
    pixels: torch.Tensor,
    text: torch.Tensor,
    settings: Mapping[str, Any],
    depth: int = 0,
    resnet_surgery: ResnetSurgery = "reference",
) -> torch.Tensor:
    """Token-text scores ``[B, C, gh, gw]`` of the patch tokens after surgery on the last ``depth`` blocks.

    Raw CLIP (``depth == 0``): plain cosine. Surgery (``resnet_surgery`` for a ModifiedResNet):
    single-prompt feature surgery when ``settings`` holds ``empty_feature``, label-set feature
    surgery for several texts, else cosine.
    """
    images = TF.normalize(pixels, loaded.mean, loaded.std)
    with torch.inference_mode(), loaded.autocast():
        tokens, grid = image_tokens_and_grid(loaded.model, images, depth, resnet_surgery)
    tokens = F.normalize(tokens.float(), dim=-1)
    empty = settings.get("empty_feature")
    if depth > 0 and empty is not None:
        similarity = single_prompt_surgery(tokens, text, empty.to(tokens.device, torch.float32))
    elif depth > 0 and text.shape[0] > 1:
        similarity = feature_surgery(tokens, text)
    else:
        similarity = raw_similarity(tokens, text)
    return similarity[:, 1:].transpose(1, 2).reshape(len(images), text.shape[0], *grid)


@register("raw")
def raw_scores(loaded: LoadedModel, pixels: torch.Tensor, text: torch.Tensor, settings: Mapping[str, Any]) -> torch.Tensor:
    """Raw CLIP: cosine of each patch token of the unmodified model with each text."""
    return _token_scores(loaded, pixels, text, settings)


@register("surgery")
def surgery_scores(loaded: LoadedModel, pixels: torch.Tensor, text: torch.Tensor, settings: Mapping[str, Any]) -> torch.Tensor:
    """CLIP Surgery: v-v architecture surgery on the last ``settings['surgery_depth']`` blocks (a ModifiedResNet's
    pool as ``settings['resnet_surgery']``), then feature surgery."""
    return _token_scores(loaded, pixels, text, settings, settings["surgery_depth"], settings["resnet_surgery"])


@register("gradcam")
def gradcam_scores(loaded: LoadedModel, pixels: torch.Tensor, text: torch.Tensor, settings: Mapping[str, Any]) -> torch.Tensor:
    """Grad-CAM of the image-text cosine at the last block (rendered at the patch grid)."""
    images = TF.normalize(pixels, loaded.mean, loaded.std)
    return gradcam(loaded.model, images, text, out_hw=patch_grid(loaded.model, tuple(images.shape[-2:])))


def explanation_scores(
    loaded: LoadedModel,
    rows: pd.DataFrame,
    labels: Sequence[str],
    cfg: Mapping[str, Any],
    batch_size: int = 16,
    num_workers: int = 0,
) -> ExplanationScores:
    """Scores of every configured method for the images of ``rows`` against the label set."""
    text, _ = label_features(loaded, labels, cfg["templates"])
    transform = square_transform(cfg["image_size"], cfg["resize_mode"])
    parts: dict[str, list[np.ndarray]]
    ids, parts = [], {method: [] for method in cfg["methods"]}
    for batch, pixels, _ in iterate_batches(rows, transform, cfg["image_size"], batch_size, num_workers, loaded.device):
        ids += batch["image_id"].tolist()
        for method in cfg["methods"]:
            parts[method].append(method_scores(loaded, method, pixels, text, cfg).numpy())
    size = (cfg["image_size"], cfg["image_size"])
    scores = {m: np.concatenate(p) if p else np.empty((0, len(labels), 1, 1), np.float32) for m, p in parts.items()}
    return stored_scores(ids, list(labels), size, scores, text.numpy())


def prompt_maps(
    loaded: LoadedModel, pixels: torch.Tensor, prompts: Sequence[str], cfg: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """Multimodal visualisation: maps [B, P, H, W] of free-text prompts (sentences too) per method.

    Each prompt stands alone (single-prompt surgery: the ensembled empty prompt is the redundant feature).
    """
    text, empty = label_features(loaded, prompts, cfg["templates"])
    settings = {**cfg, "empty_feature": empty}
    size = (pixels.shape[-2], pixels.shape[-1])
    return {method: render_scores(method_scores(loaded, method, pixels, text, settings), size) for method in cfg["methods"]}
