"""Head-level decomposition of a CLIP ViT image embedding into direct contributions.

Follows docs/methods.md (Gandelsman et al., ICLR 2024). One re-computation of the
stock open_clip 3.x vision tower yields, per image, the direct contribution of the embedding
stage, of each layer's MLP at CLS, of each attention head at CLS and (optionally) of each head
x source token for the last layers. ``ln_post`` is linearised with the image's own mean ``mu``
and standard deviation ``sigma`` of the final CLS residual: a residual term ``c`` maps to
``(g * (c - mu * s) / sigma + b * s) @ P / |e|``, where ``s`` is the term's share of the
constant part (``constant_split``): ``"reference"`` (the authors' ``prs_hook.py``) gives each of
the 2L + 1 layer outputs (embedding stage, L attention layers, L MLPs) ``1/(2L+1)`` and splits an
attention layer's share evenly over its H heads; ``"uniform"`` gives each of the K = 1 + L + L*H
CLS-level terms ``1/K``. A head x token term carries its head's share over N (split evenly over
the N source tokens, like ``b_O``). All terms sum to the normalised embedding ``e / |e|``.

Also here: streaming the contributions of a dataset to sharded ``.npy`` files with a Parquet
index (:func:`write_head_contributions`, :class:`ContributionStore`) and mean-ablation zero-shot
accuracy computed from the stored arrays alone (:func:`mean_ablation_accuracy`,
:func:`mean_ablation_tables`).

"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

from cliplens.models import LoadedModel
from cliplens.towers import block_qkv, image_tower, merge_heads, vit_embed

ConstantSplit = Literal["reference", "uniform"]


@dataclass
class Decomposition:
    """Direct contributions of one batch of B images (float32, on the model's device).

    Shapes: ``embed [B, D]``, ``mlps [B, L, D]``, ``heads [B, L, H, D]``, ``embedding [B, D]``
    (the normalised image embedding), ``norm [B]`` (norm of the unnormalised embedding) and,
    only when asked for, ``head_tokens [B, n, H, N, D]`` for the layers ``token_layers``
    (N = 1 + number of patches; token 0 is CLS, patch j >= 1 at row-major grid position j - 1).
    ``total()`` equals ``embedding``; ``head_tokens.sum(3)`` equals ``heads[:, token_layers]``.
    """

    embed: torch.Tensor
    mlps: torch.Tensor
    heads: torch.Tensor
    embedding: torch.Tensor
    norm: torch.Tensor
    grid_size: tuple[int, int]
    token_layers: tuple[int, ...] = ()
    head_tokens: torch.Tensor | None = None

    @property
    def attns(self) -> torch.Tensor:
        """Per-layer attention contributions [B, L, D] (sum over heads)."""
        return self.heads.sum(dim=2)

    def total(self) -> torch.Tensor:
        """Sum of all CLS-level terms [B, D]; equals ``embedding`` (completeness)."""
        return self.embed + self.mlps.sum(dim=1) + self.heads.sum(dim=(1, 2))


def _attention(
    block: ResidualAttentionBlock, x: torch.Tensor, need_tokens: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Recompute a block's attention on ln_1(x).

    Returns the attention output [B, N, W], the per-head mixed value at CLS [B, H, dh] and,
    when ``need_tokens``, the CLS attention weights times the values, a_0j * v_j [B, H, N, dh].
    """
    q, k, v = block_qkv(block, block.ln_1(x))
    mixed = F.scaled_dot_product_attention(q, k, v)  # [B, H, N, dh]
    output = block.attn.out_proj(merge_heads(mixed))
    cls_mix = mixed[:, :, 0].clone()  # a copy, so that the layer's full activations can be freed
    if not need_tokens:
        return output, cls_mix, None
    cls_weights = torch.softmax((q[:, :, :1] * q.shape[-1] ** -0.5) @ k.transpose(-1, -2), dim=-1)  # [B, H, 1, N]
    return output, cls_mix, cls_weights.transpose(-1, -2) * v


def _head_value_maps(block: ResidualAttentionBlock) -> torch.Tensor:
    """Per-head output maps ls_1(W_O^h) [H, dh, W] from a head's mixed value to the residual."""
    out_proj = block.attn.out_proj
    width = out_proj.weight.shape[0]
    heads = block.attn.num_heads
    return block.ls_1(out_proj.weight.T.reshape(heads, width // heads, width))


@dataclass
class _FrozenLnPost:
    """ln_post followed by P with the image's own mu, sigma frozen, divided by |e| (all [B, 1])."""

    gain: torch.Tensor
    bias: torch.Tensor
    proj: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor
    norm: torch.Tensor

    def __call__(self, term: torch.Tensor, share: float) -> torch.Tensor:
        """Map residual terms [B, ..., W] carrying ``share`` of the constant part to [B, ..., D]."""
        view = (-1,) + (1,) * (term.dim() - 1)
        centred = term.float() - self.mu.reshape(view) * share
        return (self.gain * centred / self.sigma.reshape(view) + self.bias * share) @ self.proj / self.norm.reshape(view)

    def linear(self, term: torch.Tensor) -> torch.Tensor:
        """Linear part only, for terms [B, ..., D] already mapped through ``(. * gain) @ proj``."""
        view = (-1,) + (1,) * (term.dim() - 1)
        return term / (self.sigma * self.norm).reshape(view)


def constant_shares(num_layers: int, num_heads: int, split: ConstantSplit) -> tuple[float, float]:
    """Shares of the constant part of ``ln_post``: (embedding stage and each MLP, each head)."""
    if split not in get_args(ConstantSplit):
        raise ValueError(f"constant_split {split!r} unknown; valid: {list(get_args(ConstantSplit))}")
    if split == "uniform":
        share = 1.0 / (1 + num_layers + num_layers * num_heads)
        return share, share
    layer_share = 1.0 / (2 * num_layers + 1)
    return layer_share, layer_share / num_heads


@torch.inference_mode()
def decompose(
    model: torch.nn.Module | LoadedModel,
    images: torch.Tensor,
    tokens: bool = False,
    last_layers: int = 4,
    constant_split: ConstantSplit = "reference",
) -> Decomposition:
    """Decompose the embeddings of a batch of normalised images [B, 3, S, S] (one forward pass).

    ``tokens=True`` also returns the head x source-token terms of the last ``last_layers``
    layers (memory: B * last_layers * H * N * D floats). ``constant_split`` apportions the
    constant part of ``ln_post`` over the terms (module docstring); the terms sum to the
    normalised embedding with either.
    """
    visual = image_tower(model, vit_only=True)
    blocks = visual.transformer.resblocks
    num_layers, num_heads = len(blocks), blocks[0].attn.num_heads
    layer_share, head_share = constant_shares(num_layers, num_heads, constant_split)
    token_layers = tuple(range(max(num_layers - last_layers, 0), num_layers)) if tokens else ()
    x, grid_size = vit_embed(visual, images)
    embed_term = x[:, 0].clone()  # CLS terms are copied: views would keep every layer's [B, N, W] alive
    mlp_terms, head_terms, token_parts = [], [], []
    for index, block in enumerate(blocks):
        attn_out, cls_mix, weighted_values = _attention(block, x, need_tokens=index in token_layers)
        value_maps = _head_value_maps(block)
        bias_share = block.ls_1(block.attn.out_proj.bias) / num_heads
        head_terms.append(torch.einsum("bhd,hdw->bhw", cls_mix, value_maps) + bias_share)
        if weighted_values is not None:
            token_parts.append((weighted_values, value_maps, bias_share))
        x = x + block.ls_1(attn_out)
        mlp_out = block.ls_2(block.mlp(block.ln_2(x)))
        mlp_terms.append(mlp_out[:, 0].clone())
        x = x + mlp_out

    final = x[:, 0].float()
    ln_post = visual.ln_post
    gain, bias, proj = ln_post.weight.float(), ln_post.bias.float(), visual.proj.float()
    mu = final.mean(dim=-1, keepdim=True)
    sigma = torch.sqrt(final.var(dim=-1, unbiased=False, keepdim=True) + ln_post.eps)
    unnormalised = ((final - mu) / sigma * gain + bias) @ proj
    norm = unnormalised.norm(dim=-1, keepdim=True)
    frozen = _FrozenLnPost(gain, bias, proj, mu, sigma, norm)
    result = Decomposition(
        embed=frozen(embed_term, layer_share),
        mlps=frozen(torch.stack(mlp_terms, dim=1), layer_share),
        heads=frozen(torch.stack(head_terms, dim=1), head_share),
        embedding=unnormalised / norm,
        norm=norm.squeeze(-1),
        grid_size=grid_size,
        token_layers=token_layers,
    )
    if token_parts:
        result.head_tokens = torch.stack([_head_token_terms(frozen, head_share, *part) for part in token_parts], dim=1)
    return result


def _head_token_terms(
    frozen: _FrozenLnPost,
    head_share: float,
    weighted_values: torch.Tensor,
    value_maps: torch.Tensor,
    bias_share: torch.Tensor,
) -> torch.Tensor:
    """One layer's head x token terms [B, H, N, D]; summed over tokens they give the head terms."""
    batch, _, num_tokens, _ = weighted_values.shape
    to_output = (value_maps.float() * frozen.gain) @ frozen.proj  # [H, dh, D]
    linear = frozen.linear(torch.einsum("bhnd,hde->bhne", weighted_values.float(), to_output))
    constant = frozen(bias_share.expand(batch, -1) / num_tokens, head_share / num_tokens)  # [B, D]
    return linear + constant[:, None, None, :]
