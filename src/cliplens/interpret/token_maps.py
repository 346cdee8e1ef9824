"""Spatial maps from the head x token terms: topic, contrastive and zero-shot segmentation maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchvision.transforms.v2 import functional as TF

from cliplens.images import iterate_batches, square_transform
from cliplens.interpret.decompose import ConstantSplit, decompose
from cliplens.interpret.labels import ArrayLike, _numpy
from cliplens.maps import method_scores, register, stored_scores
from cliplens.models import LoadedModel
from cliplens.stored_maps import ExplanationScores


def _patch_terms(head_tokens: ArrayLike, grid_size: tuple[int, int]) -> np.ndarray:
    tokens = _numpy(head_tokens)
    if tokens.shape[-2] != 1 + grid_size[0] * grid_size[1]:
        raise ValueError(f"{tokens.shape[-2]} tokens do not match grid {grid_size} plus CLS")
    return tokens[..., 1:, :]


def topic_maps(head_tokens: ArrayLike, texts: ArrayLike, grid_size: tuple[int, int]) -> np.ndarray:
    """Per-head topic maps c_lhj . t over patch tokens: [B, n, H, N, D] x [T, D] -> [B, n, H, T, gh, gw]."""
    maps = np.einsum("bnhjd,td->bnhtj", _patch_terms(head_tokens, grid_size), _numpy(texts))
    return maps.reshape(*maps.shape[:-1], *grid_size)


def contrastive_maps(head_tokens: ArrayLike, text: ArrayLike, other: ArrayLike, grid_size: tuple[int, int]) -> np.ndarray:
    """map(t1) - map(t2) per head: [B, n, H, gh, gw]."""
    difference = (_numpy(text) - _numpy(other)).reshape(1, -1)
    return topic_maps(head_tokens, difference, grid_size)[:, :, :, 0]


def zero_shot_segmentation(
    head_tokens: ArrayLike,
    class_embeddings: ArrayLike,
    grid_size: tuple[int, int],
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Class maps h_j(y) = sum_lh c_lhj . t_y - mean_c sum_lh c_lhj . t_c: [B, C, gh, gw].

    Sums over the stored token layers' heads (or those selected by ``mask [n, H]``).
    """
    patches = _patch_terms(head_tokens, grid_size)
    weights = np.ones(patches.shape[1:3], np.float32) if mask is None else mask.astype(np.float32)
    summed = np.einsum("bnhjd,nh->bjd", patches, weights)
    scores = summed @ _numpy(class_embeddings).T  # [B, J, C]
    scores -= scores.mean(axis=-1, keepdims=True)
    return scores.transpose(0, 2, 1).reshape(len(scores), -1, *grid_size)


METHOD = "decomposition"


def head_token_terms(
    loaded: LoadedModel, pixels: torch.Tensor, layers: int, constant_split: ConstantSplit = "reference"
) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, int]]:
    """Head x token terms [B, n, H, N, D] of the last ``layers`` layers of [0,1] pixels, their layers and grid."""
    images = TF.normalize(pixels, loaded.mean, loaded.std)
    result = decompose(loaded, images, tokens=True, last_layers=layers, constant_split=constant_split)
    assert result.head_tokens is not None  # tokens=True
    return result.head_tokens.cpu(), result.token_layers, result.grid_size


@register(METHOD, normalised=False)
def decomposition_scores(
    loaded: LoadedModel, pixels: torch.Tensor, text: torch.Tensor, settings: Mapping[str, Any]
) -> torch.Tensor:
    """Zero-shot class maps of the heads of the last ``settings['layers']`` layers (centred over the texts),
    the constant part split by ``settings['constant_split']``."""
    head_tokens, _, grid = head_token_terms(loaded, pixels, settings["layers"], settings["constant_split"])
    return torch.from_numpy(zero_shot_segmentation(head_tokens, text.cpu().numpy(), grid))


def segmentation_scores(
    loaded: LoadedModel,
    rows: pd.DataFrame,
    labels: Sequence[str],
    class_embeddings: np.ndarray,
    layers: int,
    resize_mode: str,
    batch_size: int = 32,
    num_workers: int = 0,
    constant_split: ConstantSplit = "reference",
) -> ExplanationScores:
    """Zero-shot class maps [images, C, gh, gw] of the heads of the last ``layers`` layers for the
    images of ``rows``, at the model's input size with the surgery evaluation's geometry
    (``constant_split``: see :func:`cliplens.interpret.decompose.decompose`)."""
    if not len(labels):
        raise ValueError("zero-shot segmentation needs class names; the dataset has none")
    size = loaded.image_size
    transform = square_transform(size, resize_mode)
    text = torch.from_numpy(np.asarray(class_embeddings))
    ids, parts = [], []
    for batch, pixels, _ in iterate_batches(rows, transform, size, batch_size, num_workers, loaded.device):
        parts.append(method_scores(loaded, METHOD, pixels, text, {"layers": layers, "constant_split": constant_split}).numpy())
        ids += batch["image_id"].tolist()
    return stored_scores(ids, list(labels), (size, size), {METHOD: np.concatenate(parts)}, np.asarray(class_embeddings))
