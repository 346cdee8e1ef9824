"""Grad-CAM baseline for image x text targets on stock open_clip image towers.

Target score: the cosine similarity of the normalised image embedding and a normalised text
feature. Activations: for a ViT, the ``ln_1`` output of the last block (every token, the
usual Grad-CAM layer for ViTs, as its patch rows reach the class token only through that
block's attention); for a ModifiedResNet, the ``layer4`` feature map before the attention
pool. Channel weights are the gradients averaged over the patch locations; the map is
``ReLU(sum_channels weight * activation)``, rendered like CLIP Surgery maps (min-max per
(image, label), bilinear upsampling). All targets of a batch come from one forward pass and
batched vector-Jacobian products (``is_grads_batched``), chunked over targets.

"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer

from cliplens.explain.surgery import attention_pool_tokens
from cliplens.maps import render_patch_maps
from cliplens.towers import image_tower, residual_block, resnet_features, vit_embed

DEFAULT_TARGET_CHUNK = 16


def _vit_activations_and_embedding(
    visual: VisionTransformer, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Last block's ``ln_1`` output ``[B, N, W]`` (requires grad), image embedding ``[B, D]``, grid."""
    blocks = visual.transformer.resblocks
    with torch.no_grad():
        x, grid_hw = vit_embed(visual, images)
        for block in blocks[:-1]:
            x = residual_block(block, x)
    activations = blocks[-1].ln_1(x).detach().requires_grad_()
    cls = residual_block(blocks[-1], x, normed=activations, queries=slice(0, 1))[:, 0]
    embedding = visual.ln_post(cls)
    return activations, (embedding if visual.proj is None else embedding @ visual.proj), grid_hw


def _resnet_activations_and_embedding(
    visual: ModifiedResNet, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """``layer4`` output as ``[B, h * w, C]`` tokens (requires grad), image embedding ``[B, D]``, grid."""
    with torch.no_grad():
        features = resnet_features(visual, images)
    grid_hw = (features.shape[-2], features.shape[-1])
    activations = features.flatten(2).transpose(1, 2).detach().requires_grad_()
    grid = activations.transpose(1, 2).unflatten(2, grid_hw)
    embedding = attention_pool_tokens(visual.attnpool, grid)[:, 0]
    return activations, embedding, grid_hw


def gradcam(
    model: torch.nn.Module,
    images: torch.Tensor,
    text_features: torch.Tensor,
    out_hw: tuple[int, int] | None = None,
    target_chunk: int = DEFAULT_TARGET_CHUNK,
) -> torch.Tensor:
    """Grad-CAM maps ``[B, C, H, W]`` in [0, 1] for normalised images and normalised texts ``[C, D]``.

    One forward pass per batch; ``ceil(C / target_chunk)`` batched backward passes. Works inside
    ``torch.inference_mode()`` callers (it switches autograd on locally); the model's
    parameters need not require grad.
    """
    visual = image_tower(model)
    with torch.inference_mode(False), torch.enable_grad():
        images = images.clone()
        if isinstance(visual, VisionTransformer):
            activations, embedding, grid_hw = _vit_activations_and_embedding(visual, images)
            patch_slice = slice(1, None)
        else:
            activations, embedding, grid_hw = _resnet_activations_and_embedding(visual, images)
            patch_slice = slice(None)
        text = text_features.clone().to(embedding.device, torch.float32)
        scores = F.normalize(embedding.float(), dim=-1) @ text.T
        patches = activations[:, patch_slice].detach().float()
        cams = []
        for start in range(0, text.shape[0], target_chunk):
            targets = torch.arange(start, min(start + target_chunk, text.shape[0]), device=scores.device)
            selectors = F.one_hot(targets, text.shape[0]).to(scores.dtype)[:, None, :].expand(-1, scores.shape[0], -1)
            (grads,) = torch.autograd.grad(scores, activations, selectors, retain_graph=True, is_grads_batched=True)
            channel_weights = grads[:, :, patch_slice].float().mean(dim=2)
            cams.append(torch.einsum("tbw,bpw->bpt", channel_weights, patches).relu())
    return render_patch_maps(torch.cat(cams, dim=-1), grid_hw, out_hw or (images.shape[-2], images.shape[-1]))
