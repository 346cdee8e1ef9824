"""CLIP Surgery (Li et al., Pattern Recognition 2025) on stock open_clip image towers.

Architecture surgery adds a v-v self-attention path to the last ``k`` ViT blocks (or to the
attention pool of a ModifiedResNet); feature surgery removes the feature shared by all labels
from the token-text similarities. Everything is recomputed from the public open_clip modules
(``attn.in_proj_weight``/``in_proj_bias``/``out_proj``, ``ln_1``, ``ln_2``, ``mlp``, ``ls_1``,
``ls_2``, ``conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``, ``ln_post``,
``proj``, ``attnpool``); open_clip itself is never modified.

Conventions: token tensors are ``[B, N, D]`` with the class token first (``N = 1 + gh * gw``,
patches row-major); similarities are ``[B, N, C]``; maps are ``[B, C, H, W]`` in ``[0, 1]``.
See docs/surgery.md.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import AttentionPool2d, ModifiedResNet
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

Method = Literal["raw", "surgery"]
FeatureSurgery = Literal["auto", "label_set", "single_prompt", "off"]

DEFAULT_SURGERY_DEPTH = 6
RESNET_VV_SCALE_FACTOR = 8.0
CLASS_WEIGHT_LOGIT_SCALE = 2.0
MINMAX_EPS = 1e-12


# --------------------------------------------------------------------------- open_clip plumbing


def image_tower(model: torch.nn.Module) -> VisionTransformer | ModifiedResNet:
    """The supported image tower of an open_clip CLIP model (or the tower itself)."""
    visual = getattr(model, "visual", model)
    if isinstance(visual, VisionTransformer):
        if visual.attn_pool is not None or visual.pool_type != "tok":
            raise NotImplementedError("CLIP Surgery needs a class-token ViT without attentional pooling")
        if not all(isinstance(block, ResidualAttentionBlock) for block in visual.transformer.resblocks):
            raise NotImplementedError("CLIP Surgery supports open_clip's default ResidualAttentionBlock only")
        return visual
    if isinstance(visual, ModifiedResNet):
        return visual
    raise TypeError(f"unsupported image tower {type(visual).__name__}; need VisionTransformer or ModifiedResNet")


def resize_positional_embedding(
    positional_embedding: torch.Tensor, grid_hw: tuple[int, int], new_grid_hw: tuple[int, int]
) -> torch.Tensor:
    """Bilinearly resize a ``[1 + gh * gw, W]`` positional embedding (class slot kept) to a new grid."""
    if tuple(grid_hw) == tuple(new_grid_hw):
        return positional_embedding
    cls_slot, grid = positional_embedding[:1], positional_embedding[1:]
    grid = grid.T.reshape(1, -1, *grid_hw)
    grid = F.interpolate(grid, size=tuple(new_grid_hw), mode="bilinear", align_corners=False)
    return torch.cat([cls_slot, grid.flatten(2)[0].T], dim=0)


def vit_embed(visual: VisionTransformer, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Token embeddings after ``ln_pre`` ``[B, 1 + gh * gw, W]`` and the patch grid, for any input size."""
    patches = visual.conv1(images)
    grid_hw = (patches.shape[-2], patches.shape[-1])
    patches = patches.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
    positional = resize_positional_embedding(visual.positional_embedding, tuple(visual.grid_size), grid_hw)
    tokens = torch.cat([cls, patches], dim=1) + positional.to(patches.dtype)
    return visual.ln_pre(tokens), grid_hw


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, W] -> [B, heads, N, W / heads]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, d] -> [B, N, heads * d]."""
    return x.transpose(1, 2).flatten(2)


def block_qkv(block: ResidualAttentionBlock, normed: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-head query, key and value ``[B, heads, N, d]`` of a block's ``ln_1`` output."""
    attn = block.attn
    qkv = F.linear(normed, attn.in_proj_weight, attn.in_proj_bias)
    return tuple(_split_heads(part, attn.num_heads) for part in qkv.chunk(3, dim=-1))


def block_output(block: ResidualAttentionBlock, heads_out: torch.Tensor) -> torch.Tensor:
    """Merge attention heads, apply the block's ``out_proj`` and ``ls_1``."""
    return block.ls_1(block.attn.out_proj(_merge_heads(heads_out)))


def residual_block(
    block: ResidualAttentionBlock,
    x: torch.Tensor,
    normed: torch.Tensor | None = None,
    queries: slice = slice(None),
) -> torch.Tensor:
    """The stock block recomputed: ``x + Attn_qk(ln_1 x)``, then ``+ MLP(ln_2 .)``, for ``queries`` tokens.

    ``normed`` replaces ``ln_1(x)`` as the attention input (Grad-CAM differentiates through it).
    """
    q, k, v = block_qkv(block, block.ln_1(x) if normed is None else normed)
    x = x[:, queries] + block_output(block, F.scaled_dot_product_attention(q[:, :, queries], k, v))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


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


def resnet_features(visual: ModifiedResNet, images: torch.Tensor) -> torch.Tensor:
    """The ModifiedResNet feature map before the attention pool ``[B, C, h, w]``."""
    x = visual.stem(images)
    return visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))


def attention_pool_tokens(pool: AttentionPool2d, features: torch.Tensor, surgery: bool) -> torch.Tensor:
    """Per-location outputs ``[B, 1 + h * w, D]`` of the attention pool; token 0 is the pooled embedding.

    Without surgery every location is a query of the stock q-k attention. With surgery the
    pooled token keeps the stock attention and the locations use the v-v path (v L2-normalised
    for the attention weights, scale multiplied by 8, values unnormalised).
    """
    x = features.flatten(2).transpose(1, 2)
    x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
    side = round((pool.positional_embedding.shape[0] - 1) ** 0.5)
    positional = resize_positional_embedding(pool.positional_embedding, (side, side), features.shape[-2:])
    x = x + positional.to(x.dtype)
    q, k, v = (_split_heads(proj(x), pool.num_heads) for proj in (pool.q_proj, pool.k_proj, pool.v_proj))
    if surgery:
        v_unit = F.normalize(v, dim=-1)
        scale = RESNET_VV_SCALE_FACTOR * v.shape[-1] ** -0.5
        pooled = F.scaled_dot_product_attention(q[:, :, :1], k, v)
        locations = F.scaled_dot_product_attention(v_unit[:, :, 1:], v_unit, v, scale=scale)
        heads_out = torch.cat([pooled, locations], dim=2)
    else:
        heads_out = F.scaled_dot_product_attention(q, k, v)
    return pool.c_proj(_merge_heads(heads_out))


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
    model: torch.nn.Module, images: torch.Tensor, surgery_depth: int = DEFAULT_SURGERY_DEPTH
) -> tuple[torch.Tensor, tuple[int, int]]:
    """:func:`image_tokens` plus the patch grid ``(gh, gw)`` the tokens come from."""
    if surgery_depth < 0:
        raise ValueError(f"surgery_depth must be >= 0, got {surgery_depth}")
    visual = image_tower(model)
    if isinstance(visual, VisionTransformer):
        return _vit_tokens(visual, images, surgery_depth)
    features = resnet_features(visual, images)
    return attention_pool_tokens(visual.attnpool, features, surgery_depth > 0), tuple(features.shape[-2:])


def image_tokens(model: torch.nn.Module, images: torch.Tensor, surgery_depth: int = DEFAULT_SURGERY_DEPTH) -> torch.Tensor:
    """Projected, unnormalised token features ``[B, 1 + gh * gw, D]`` with architecture surgery.

    ViT: surgery on the last ``surgery_depth`` blocks (all blocks when it exceeds their number),
    then ``ln_post`` and ``proj`` on every token;
    token 0 equals ``model.encode_image`` (unnormalised) for every depth; depth 0 gives the
    raw CLIP tokens. ModifiedResNet: any depth > 0 puts the v-v path into the attention pool.
    Inputs of any size (multiples of the patch size) use bilinearly resized positional embeddings.
    """
    return image_tokens_and_grid(model, images, surgery_depth)[0]


# --------------------------------------------------------------------------- feature surgery


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


# --------------------------------------------------------------------------- maps


def render_patch_maps(patch_scores: torch.Tensor, grid_hw: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """Patch scores ``[B, gh * gw, C]`` -> maps ``[B, C, H, W]``: min-max per (image, label), bilinear."""
    batch, count, labels = patch_scores.shape
    if count != grid_hw[0] * grid_hw[1]:
        raise ValueError(f"{count} patch scores do not fill a {grid_hw[0]}x{grid_hw[1]} grid")
    low = patch_scores.amin(dim=1, keepdim=True)
    high = patch_scores.amax(dim=1, keepdim=True)
    scaled = (patch_scores - low) / (high - low).clamp_min(MINMAX_EPS)
    maps = scaled.transpose(1, 2).reshape(batch, labels, *grid_hw)
    if tuple(out_hw) == tuple(grid_hw):
        return maps
    return F.interpolate(maps, size=tuple(out_hw), mode="bilinear", align_corners=False)


def render_maps(similarity: torch.Tensor, grid_hw: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """Similarities incl. the class token ``[B, 1 + gh * gw, C]`` -> maps ``[B, C, H, W]`` in [0, 1]."""
    return render_patch_maps(similarity[:, 1:], grid_hw, out_hw)


def segment(maps: torch.Tensor) -> torch.Tensor:
    """Open-vocabulary segmentation: per-pixel argmax over labels, ``[B, C, H, W]`` -> ``[B, H, W]``."""
    return maps.argmax(dim=1)


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
) -> torch.Tensor:
    """Explanation maps ``[B, C, H, W]`` in [0, 1] for normalised images and normalised texts ``[C, D]``.

    ``method``: ``"raw"`` = unmodified model (``depth`` ignored); ``"surgery"`` = architecture
    surgery on the last ``depth`` blocks. ``feature_surgery_mode``: ``"label_set"`` (needs C > 1),
    ``"single_prompt"`` (``S = f . (t - empty_feature)``), ``"off"`` (plain cosine) or ``"auto"``
    = ``"off"`` for raw, else ``"label_set"`` when C > 1 and ``"single_prompt"`` when C == 1.
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
        tokens, grid_hw = image_tokens_and_grid(model, images, depth if method == "surgery" else 0)
        tokens = F.normalize(tokens.float(), dim=-1)
        text = text_features.to(tokens.device, torch.float32)
        if mode == "label_set":
            similarity = feature_surgery(tokens, text)
        elif mode == "single_prompt":
            similarity = single_prompt_surgery(tokens, text, empty_feature.to(tokens.device, torch.float32))
        else:
            similarity = raw_similarity(tokens, text)
        return render_maps(similarity, grid_hw, out_hw or tuple(images.shape[-2:]))
