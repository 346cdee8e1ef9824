"""Pixels as the pipeline holds them: 8-bit ``[B, 3, H, W]`` uint8 as decoded (any memory order; the
loader gives them channels-last, as Pillow holds them) and ``[0, 1]`` float ``[B, 3, H, W]`` as the
models and most perturbations take them."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def unit_pixels(images: Tensor) -> Tensor:
    """[0, 1] float pixels of ``images`` [B, 3, H, W]: float ones as they are; 8-bit ones as float32
    (contiguous, on their device), value / 255 exactly as torchvision's ``ToTensor`` computes it
    on the CPU."""
    if images.is_floating_point():
        return images
    # reordering while converting, then dividing in place: faster than one strided division. The
    # divisor is a tensor on the device: CUDA multiplies by the reciprocal of a Python number
    # instead, which is one unit in the last place off for half of the 256 levels
    floats = torch.empty(images.shape, dtype=torch.float32, device=images.device).copy_(images)
    return floats.div_(torch.tensor(255.0, device=images.device))


def float_dtype(images: Tensor) -> torch.dtype:
    """The dtype of results computed from ``images``: their own if float, float32 for 8-bit ones."""
    return images.dtype if images.is_floating_point() else torch.float32


def uint8_images(pixels: Tensor) -> np.ndarray:
    """[B, H, W, 3] uint8 of pixels [B, 3, H, W] on any device: 8-bit ones as they are, [0, 1] floats rounded."""
    if pixels.dtype != torch.uint8:
        pixels = (pixels.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()
