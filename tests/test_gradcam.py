"""Grad-CAM baseline: shapes, range, dependence on the target text, and agreement with a
hook-based Grad-CAM on open_clip's stock forward pass (random weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cliplens.explain.gradcam import gradcam
from cliplens.explain.surgery import render_maps
from cliplens.models import create_tiny_clip


@pytest.fixture(scope="module", params=["vit", "resnet"])
def tiny_model(request) -> torch.nn.Module:
    return create_tiny_clip(request.param, seed=0).requires_grad_(False)


def random_images(batch: int, size: int = 224) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def random_unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_gradcam_shape_range_and_inference_mode(tiny_model):
    with torch.inference_mode():
        maps = gradcam(tiny_model, random_images(2), random_unit(5, 64), target_chunk=2)
    assert maps.shape == (2, 5, 224, 224)
    assert maps.isfinite().all() and maps.amin() >= 0 and maps.amax() <= 1


def test_gradcam_changes_with_the_target_text(tiny_model):
    text = random_unit(1, 64, seed=3)
    maps = gradcam(tiny_model, random_images(2), torch.cat([text, -text]), out_hw=(7, 7))
    assert (maps[:, 0] - maps[:, 1]).abs().amax() > 0.1


def test_gradcam_is_batched_over_images_and_targets(tiny_model):
    images, text = random_images(3), random_unit(4, 64)
    maps = gradcam(tiny_model, images, text, out_hw=(7, 7), target_chunk=3)
    torch.testing.assert_close(gradcam(tiny_model, images[2:], text[1:2], out_hw=(7, 7)), maps[2:, 1:2], atol=1e-5, rtol=0)


def test_gradcam_vit_other_input_size():
    model = create_tiny_clip("vit", seed=0)
    maps = gradcam(model, random_images(1, 336), random_unit(2, 64))
    assert maps.shape == (1, 2, 336, 336) and maps.isfinite().all()


def test_vit_gradcam_matches_hooked_stock_forward():
    """Reference: capture the last block's ln_1 output with a forward hook during the stock
    ``encode_image``, backpropagate each cosine score one target at a time."""
    model = create_tiny_clip("vit", seed=0)
    images, text = random_images(2), random_unit(3, 64)
    captured = []

    def capture(module: torch.nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        output.retain_grad()
        captured.append(output)

    hook = model.visual.transformer.resblocks[-1].ln_1.register_forward_hook(capture)
    try:
        pixels = images.clone().requires_grad_()  # makes the stock graph reach the hooked activation
        scores = model.encode_image(pixels, normalize=True) @ text.T
    finally:
        hook.remove()
    activations = captured[0]
    cams = []
    for target in range(text.shape[0]):
        activations.grad = None
        scores[:, target].sum().backward(retain_graph=True)
        weights = activations.grad[:, 1:].mean(dim=1)
        cams.append(torch.einsum("bw,bnw->bn", weights, activations.detach()).relu())
    expected = render_maps(torch.stack(cams, dim=-1), (7, 7), (7, 7))
    torch.testing.assert_close(gradcam(model, images, text, out_hw=(7, 7)), expected, atol=1e-5, rtol=0)
