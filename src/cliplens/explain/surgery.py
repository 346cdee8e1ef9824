"""CLIP Surgery (Li et al., Pattern Recognition 2025) on stock open_clip image towers.

Architecture surgery adds a v-v self-attention path to the last ``k`` ViT blocks (or puts one
into the attention pool of a ModifiedResNet, as the authors' released code does or as the paper
describes: ``resnet_surgery``); feature surgery removes the feature shared by all labels
from the token-text similarities. Everything is recomputed from the public open_clip modules
(``attn.in_proj_weight``/``in_proj_bias``/``out_proj``, ``ln_1``, ``ln_2``, ``mlp``, ``ls_1``,
``ls_2``, ``conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``, ``ln_post``,
``proj``, ``attnpool``); open_clip itself is never modified.

Conventions: token tensors are ``[B, N, D]`` with the class token first (``N = 1 + gh * gw``,
patches row-major); similarities are ``[B, N, C]``; maps are ``[B, C, H, W]`` in ``[0, 1]``.
See docs/surgery.md.

"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import pandas as pd
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import AttentionPool2d
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

from cliplens.maps import MINMAX_EPS, render_patch_maps
from cliplens.towers import (
    block_output,
    block_qkv,
    image_tower,
    merge_heads,
    residual_block,
    resize_positional_embedding,
    resnet_features,
    split_heads,
    vit_embed,
)

Method = Literal["raw", "surgery"]


FeatureSurgery = Literal["auto", "label_set", "single_prompt", "off"]


ResnetSurgery = Literal["reference", "paper"]


DEFAULT_SURGERY_DEPTH = 6


RESNET_VV_SCALE_FACTOR = 8.0


CLASS_WEIGHT_LOGIT_SCALE = 2.0


def surgery_block(
    block: ResidualAttentionBlock, x_ori: torch.Tensor, original_queries: slice = slice(None)
) -> tuple[torch.Tensor, torch.Tensor]:
    """One dual-path block: the original path's output and the v-v update of the patch tokens.

    Both paths read ``ln_1(x_ori)``; the v-v path is ``softmax(s V V^T) V`` per head (``s`` =
    head_dim^-0.5) through the block's own ``out_proj`` and ``ls_1``, and skips the MLP. Only
    patch queries are computed for it (the new path's class token is never read), and only
    ``original_queries`` for the original path (the last block needs the class token alone).
    """
    q, k, v = block_qkv(block, block.ln_1(x_ori))
    vv_update = block_output(block, F.scaled_dot_product_attention(v[:, :, 1:], v, v))
    x_ori = x_ori[:, original_queries]
    x_ori = x_ori + block_output(block, F.scaled_dot_product_attention(q[:, :, original_queries], k, v))
    x_ori = x_ori + block.ls_2(block.mlp(block.ln_2(x_ori)))
    return x_ori, vv_update


def attention_pool_tokens(pool: AttentionPool2d, features: torch.Tensor, surgery: ResnetSurgery | None = None) -> torch.Tensor:
    """Per-location outputs ``[B, 1 + h * w, D]`` of the attention pool; token 0 is the pooled token.

    ``surgery=None``: every token is a query of the stock q-k attention (token 0 = the embedding).
    ``"reference"`` (the authors' released code): every token, the pooled one included, uses
    plain v-v attention ``softmax(s V V^T) V`` with ``s = head_dim^-0.5``. ``"paper"``: the pooled
    token keeps the stock attention and the locations use v-v attention with v L2-normalised for
    the attention weights, the scale multiplied by 8, and unnormalised values.
    """
    x = features.flatten(2).transpose(1, 2)
    x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
    side = round((pool.positional_embedding.shape[0] - 1) ** 0.5)
    positional = resize_positional_embedding(pool.positional_embedding, (side, side), (features.shape[-2], features.shape[-1]))
    x = x + positional.to(x.dtype)
    q, k, v = (split_heads(proj(x), pool.num_heads) for proj in (pool.q_proj, pool.k_proj, pool.v_proj))
    if surgery == "reference":
        heads_out = F.scaled_dot_product_attention(v, v, v)
    elif surgery == "paper":
        v_unit = F.normalize(v, dim=-1)
        scale = RESNET_VV_SCALE_FACTOR * v.shape[-1] ** -0.5
        pooled = F.scaled_dot_product_attention(q[:, :, :1], k, v)
        locations = F.scaled_dot_product_attention(v_unit[:, :, 1:], v_unit, v, scale=scale)
        heads_out = torch.cat([pooled, locations], dim=2)
    else:
        heads_out = F.scaled_dot_product_attention(q, k, v)
    return pool.c_proj(merge_heads(heads_out))


def _vit_tokens(visual: VisionTransformer, images: torch.Tensor, depth: int) -> tuple[torch.Tensor, tuple[int, int]]:
    blocks = visual.transformer.resblocks
    x, grid_hw = vit_embed(visual, images)
    first_surgery_block = max(len(blocks) - depth, 0)
    for block in blocks[:first_surgery_block]:
        x = residual_block(block, x)
    patches_new = x[:, 1:]
    for index in range(first_surgery_block, len(blocks)):
        last = index == len(blocks) - 1
        x, vv_update = surgery_block(blocks[index], x, slice(0, 1) if last else slice(None))
        patches_new = patches_new + vv_update
    tokens = visual.ln_post(torch.cat([x[:, :1], patches_new], dim=1))
    return (tokens if visual.proj is None else tokens @ visual.proj), grid_hw


def image_tokens_and_grid(
    model: torch.nn.Module,
    images: torch.Tensor,
    surgery_depth: int = DEFAULT_SURGERY_DEPTH,
    resnet_surgery: ResnetSurgery = "reference",
) -> tuple[torch.Tensor, tuple[int, int]]:
    """:func:`image_tokens` plus the patch grid ``(gh, gw)`` the tokens come from."""
    if surgery_depth < 0:
        raise ValueError(f"surgery_depth must be >= 0, got {surgery_depth}")
    if resnet_surgery not in get_args(ResnetSurgery):
        raise ValueError(f"resnet_surgery {resnet_surgery!r} unknown; valid: {list(get_args(ResnetSurgery))}")
    visual = image_tower(model)
    if isinstance(visual, VisionTransformer):
        return _vit_tokens(visual, images, surgery_depth)
    features = resnet_features(visual, images)
    tokens = attention_pool_tokens(visual.attnpool, features, resnet_surgery if surgery_depth > 0 else None)
    return tokens, (features.shape[-2], features.shape[-1])


def image_tokens(
    model: torch.nn.Module,
    images: torch.Tensor,
    surgery_depth: int = DEFAULT_SURGERY_DEPTH,
    resnet_surgery: ResnetSurgery = "reference",
) -> torch.Tensor:
    """Projected, unnormalised token features ``[B, 1 + gh * gw, D]`` with architecture surgery.

    ViT: surgery on the last ``surgery_depth`` blocks (all blocks when it exceeds their number),
    then ``ln_post`` and ``proj`` on every token;
    token 0 equals ``model.encode_image`` (unnormalised) for every depth; depth 0 gives the
    raw CLIP tokens. ModifiedResNet: any depth > 0 puts the v-v path of ``resnet_surgery`` into
    the attention pool (:func:`attention_pool_tokens`; with ``"reference"`` token 0 is v-v too).
    Inputs of any size (multiples of the patch size) use bilinearly resized positional embeddings.
    """
    return image_tokens_and_grid(model, images, surgery_depth, resnet_surgery)[0]


def raw_similarity(tokens_norm: torch.Tensor, text_norm: torch.Tensor) -> torch.Tensor:
    """Plain cosine similarities ``[B, N, C]`` of normalised tokens and texts."""
    return tokens_norm @ text_norm.T


def class_weights(cls_norm: torch.Tensor, text_norm: torch.Tensor) -> torch.Tensor:
    """Feature-surgery label weights ``w = p / mean(p)``, ``p = softmax_c(2 f_0 . t_c)``: ``[B, C]``."""
    probs = (CLASS_WEIGHT_LOGIT_SCALE * cls_norm @ text_norm.T).softmax(dim=-1)
    return probs / probs.mean(dim=-1, keepdim=True)


def feature_surgery(tokens_norm: torch.Tensor, text_norm: torch.Tensor) -> torch.Tensor:
    """Label-set feature surgery ``S [B, N, C]`` for normalised tokens ``[B, N, D]`` and texts ``[C, D]``.

    ``S_jc = sum_d (F_jc - mean_c F_jc)_d`` with ``F_jc = (f_j * t_c) w_c``. Summing over ``d``
    commutes with the mean over ``c``, so ``S_jc = w_c (f_j . t_c) - mean_c' w_c' (f_j . t_c')``
    exactly: memory is ``B * N * C``, the ``B * N * C * D`` product is never formed.
    """
    weighted = raw_similarity(tokens_norm, text_norm) * class_weights(tokens_norm[:, 0], text_norm)[:, None, :]
    return weighted - weighted.mean(dim=-1, keepdim=True)


def single_prompt_surgery(tokens_norm: torch.Tensor, text_norm: torch.Tensor, empty_norm: torch.Tensor) -> torch.Tensor:
    """Single-prompt surgery ``S_jc = f_j . (t_c - t_empty)``: ``[B, N, C]``; each prompt on its own."""
    return tokens_norm @ (text_norm - empty_norm).T


def render_maps(similarity: torch.Tensor, grid_hw: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """Similarities incl. the class token ``[B, 1 + gh * gw, C]`` -> maps ``[B, C, H, W]`` in [0, 1]."""
    return render_patch_maps(similarity[:, 1:], grid_hw, out_hw)


def text_to_points(
    saliency: torch.Tensor,
    out_hw: tuple[int, int] | None = None,
    threshold: float = 0.8,
    downsample: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative point prompts ``(pos [P, 2], neg [P, 2])`` as integer ``(x, y)`` pixels.

    The map ``[h, w]`` (the reference passes the patch-grid map) is bilinearly downsampled by
    ``downsample``, min-max normalised; positives are the cells >= ``threshold`` (at most half
    the cells, most salient first), negatives the same number of lowest cells (lowest first).
    Cell centres are scaled to ``out_hw`` (default: the map's own size).
    """
    height, width = saliency.shape
    out_h, out_w = out_hw or (height, width)
    cells_hw = (max(height // downsample, 1), max(width // downsample, 1))
    cells = F.interpolate(saliency[None, None].float(), size=cells_hw, mode="bilinear", align_corners=False)
    cells = cells.flatten()
    cells = (cells - cells.min()) / (cells.max() - cells.min()).clamp_min(MINMAX_EPS)
    count = min(int((cells >= threshold).sum()), cells.numel() // 2)
    order = torch.sort(cells, descending=True, stable=True).indices
    row, col = order // cells_hw[1], order % cells_hw[1]
    x = ((col + 0.5) * (out_w / cells_hw[1])).clamp(max=out_w - 1).long()
    y = ((row + 0.5) * (out_h / cells_hw[0])).clamp(max=out_h - 1).long()
    points = torch.stack([x, y], dim=1)
    return points[:count], points.flip(0)[:count]


def explain(
    model: torch.nn.Module,
    images: torch.Tensor,
    text_features: torch.Tensor,
    empty_feature: torch.Tensor | None = None,
    method: Method = "surgery",
    depth: int = DEFAULT_SURGERY_DEPTH,
    out_hw: tuple[int, int] | None = None,
    feature_surgery_mode: FeatureSurgery = "auto",
    resnet_surgery: ResnetSurgery = "reference",
) -> torch.Tensor:
    """Explanation maps ``[B, C, H, W]`` in [0, 1] for normalised images and normalised texts ``[C, D]``.

    ``method``: ``"raw"`` = unmodified model (``depth`` ignored); ``"surgery"`` = architecture
    surgery on the last ``depth`` blocks. ``feature_surgery_mode``: ``"label_set"`` (needs C > 1),
    ``"single_prompt"`` (``S = f . (t - empty_feature)``), ``"off"`` (plain cosine) or ``"auto"``
    = ``"off"`` for raw, else ``"label_set"`` when C > 1 and ``"single_prompt"`` when C == 1.
    ``resnet_surgery``: the ModifiedResNet variant (:func:`attention_pool_tokens`).
    One image forward pass per call, whatever C; ``out_hw`` defaults to the image size.
    """
    if method not in get_args(Method):
        raise ValueError(f"method {method!r} unknown; valid: {list(get_args(Method))}")
    if feature_surgery_mode not in get_args(FeatureSurgery):
        raise ValueError(f"feature_surgery_mode {feature_surgery_mode!r} unknown; valid: {list(get_args(FeatureSurgery))}")
    mode = feature_surgery_mode
    if mode == "auto":
        mode = "off" if method == "raw" else ("label_set" if text_features.shape[0] > 1 else "single_prompt")
    if mode == "label_set" and text_features.shape[0] < 2:
        raise ValueError("label-set feature surgery needs at least two texts; use 'single_prompt'")
    if mode == "single_prompt" and empty_feature is None:
        raise ValueError("single-prompt feature surgery needs empty_feature (the embedded empty prompt)")
    with torch.inference_mode():
        tokens, grid_hw = image_tokens_and_grid(model, images, depth if method == "surgery" else 0, resnet_surgery)
        tokens = F.normalize(tokens.float(), dim=-1)
        text = text_features.to(tokens.device, torch.float32)
        if mode == "label_set":
            similarity = feature_surgery(tokens, text)
        elif mode == "single_prompt":
            assert empty_feature is not None  # checked above
            similarity = single_prompt_surgery(tokens, text, empty_feature.to(tokens.device, torch.float32))
        else:
            similarity = raw_similarity(tokens, text)
        return render_maps(similarity, grid_hw, out_hw or (images.shape[-2], images.shape[-1]))


def prompt_points(
    maps: torch.Tensor, image_ids: Sequence[str], prompts: Sequence[str], threshold: float = 0.8, downsample: int = 2
) -> pd.DataFrame:
    """Point prompts (:func:`text_to_points`, e.g. for a segmenter) of every map ``[B, P, H, W]``.

    One row per point: image_id, prompt, kind (positive | negative), rank (0 = most / least
    salient first), x, y (pixels of the map).
    """
    rows = []
    for b, image_id in enumerate(image_ids):
        for p, prompt in enumerate(prompts):
            positive, negative = text_to_points(maps[b, p], threshold=threshold, downsample=downsample)
            for kind, points in (("positive", positive), ("negative", negative)):
                rows += [(image_id, prompt, kind, rank, x, y) for rank, (x, y) in enumerate(points.tolist())]
    return pd.DataFrame(rows, columns=["image_id", "prompt", "kind", "rank", "x", "y"])
