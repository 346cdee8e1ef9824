"""One re-computation of open_clip's image towers (ViT and ModifiedResNet) from their public modules.

CLIP Surgery, Grad-CAM and the head decomposition all run the towers through these functions,
so there is one support check and one positional-embedding resize for every input size.
Conventions: token tensors are ``[B, N, W]`` with the class token first (``N = 1 + gh * gw``,
patches row-major); per-head tensors are ``[B, heads, N, d]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

from cliplens.models import LoadedModel


class UnsupportedModelError(ValueError):
    """The image tower is not one that cliplens can re-compute."""


def image_tower(model: torch.nn.Module | LoadedModel, vit_only: bool = False) -> VisionTransformer | ModifiedResNet:
    """The supported image tower of an open_clip CLIP model (a :class:`LoadedModel`, or the tower itself).

    Supported: open_clip's ``VisionTransformer`` with class-token pooling, no attentional pool and
    default ``ResidualAttentionBlock`` blocks, and ``ModifiedResNet`` (unless ``vit_only``).
    """
    module = model.model if isinstance(model, LoadedModel) else model
    visual = getattr(module, "visual", module)
    if isinstance(visual, VisionTransformer):
        if visual.attn_pool is not None or visual.pool_type != "tok":
            raise UnsupportedModelError("only class-token ViTs without attentional pooling are supported (pool_type='tok')")
        if not all(isinstance(block, ResidualAttentionBlock) for block in visual.transformer.resblocks):
            raise UnsupportedModelError("only open_clip's default ResidualAttentionBlock is supported")
        if vit_only and visual.proj is None:
            raise UnsupportedModelError("the ViT needs its output projection visual.proj")
        return visual
    if isinstance(visual, ModifiedResNet) and not vit_only:
        return visual
    need = "an open_clip VisionTransformer" + ("" if vit_only else " or ModifiedResNet")
    raise UnsupportedModelError(f"unsupported image tower {type(visual).__name__}; need {need} (not a timm tower)")


def patch_grid(model: torch.nn.Module | LoadedModel, image_hw: tuple[int, int]) -> tuple[int, int]:
    """The token grid an input size gives: patch size for a ViT, stride 32 for a ModifiedResNet."""
    visual = image_tower(model)
    stride = visual.patch_size if isinstance(visual, VisionTransformer) else (32, 32)
    return image_hw[0] // stride[0], image_hw[1] // stride[1]


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
    weight = visual.conv1.weight
    patches = visual.conv1(images.to(weight.device, weight.dtype))
    grid_hw = (patches.shape[-2], patches.shape[-1])
    patches = patches.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
    positional = resize_positional_embedding(visual.positional_embedding, tuple(visual.grid_size), grid_hw)
    tokens = torch.cat([cls, patches], dim=1) + positional.to(patches.dtype)
    return visual.ln_pre(tokens), grid_hw


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, W] -> [B, heads, N, W / heads]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, d] -> [B, N, heads * d]."""
    return x.transpose(1, 2).flatten(2)


def block_qkv(block: ResidualAttentionBlock, normed: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-head query, key and value ``[B, heads, N, d]`` of a block's ``ln_1`` output."""
    attn = block.attn
    qkv = F.linear(normed, attn.in_proj_weight, attn.in_proj_bias)
    return tuple(split_heads(part, attn.num_heads) for part in qkv.chunk(3, dim=-1))


def block_output(block: ResidualAttentionBlock, heads_out: torch.Tensor) -> torch.Tensor:
    """Merge attention heads, apply the block's ``out_proj`` and ``ls_1``."""
    return block.ls_1(block.attn.out_proj(merge_heads(heads_out)))


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


def resnet_features(visual: ModifiedResNet, images: torch.Tensor) -> torch.Tensor:
    """The ModifiedResNet feature map before the attention pool ``[B, C, h, w]``."""
    x = visual.stem(images)
    return visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
