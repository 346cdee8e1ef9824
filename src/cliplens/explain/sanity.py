"""Sanity check of explanation maps (Adebayo et al., 2018): cascading randomisation of the image tower."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from scipy import stats
from skimage.metrics import structural_similarity

from cliplens.maps import method_scores, render_scores
from cliplens.metrics import as_numpy
from cliplens.models import LoadedModel, encode_pixels


def cascade_stages(visual: torch.nn.Module) -> list[tuple[str, list[str]]]:
    """Stages of an open_clip image tower from the top down: ``(label, attribute names)``."""
    if hasattr(visual, "transformer"):
        n_blocks = len(cast(Any, visual).transformer.resblocks)  # open_clip towers are untyped
        return [
            ("head", ["ln_post", "proj"]),
            *[(f"block{i}", [f"transformer.resblocks.{i}"]) for i in reversed(range(n_blocks))],
            ("embedding", ["conv1", "class_embedding", "positional_embedding", "ln_pre"]),
        ]
    if hasattr(visual, "attnpool"):
        return [
            ("attnpool", ["attnpool"]),
            *[(f"layer{i}", [f"layer{i}"]) for i in (4, 3, 2, 1)],
            ("stem", ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]),
        ]
    raise ValueError(f"cascading randomisation supports open_clip ViT and ModifiedResNet towers, not {type(visual).__name__}")


def redraw_like(parameter: torch.Tensor) -> None:
    """Overwrite a tensor in place with N(0, std(original)^2) noise."""
    std = parameter.std() if parameter.numel() > 1 else parameter.new_tensor(1.0)
    parameter.normal_(0.0, float(std))


def reinitialise(target: torch.nn.Module | torch.nn.Parameter) -> None:
    """Re-initialise a module (each submodule's own PyTorch initialiser) or a bare parameter.

    Parameters owned by submodules without an initialiser (layer scales, attention-pool
    positional embeddings) and bare parameters are redrawn with :func:`redraw_like`.
    """
    with torch.no_grad():
        if isinstance(target, torch.nn.Parameter):
            redraw_like(target)
            return
        for module in target.modules():
            reset = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
            if reset is not None:
                reset()
            else:
                for parameter in module.parameters(recurse=False):
                    redraw_like(parameter)


def attribute(root: torch.nn.Module, dotted_name: str) -> torch.nn.Module | torch.nn.Parameter:
    """A submodule or parameter by dotted name (``transformer.resblocks.3``)."""
    target = root
    for part in dotted_name.split("."):
        target = getattr(target, part)
    return target


def randomise_layers_cascade(model: torch.nn.Module, seed: int = 0) -> Iterator[tuple[str, torch.nn.Module]]:
    """Yield ``(stage, copy)`` with the image tower re-initialised cumulatively from the top down.

    The i-th copy has stages 0..i of :func:`cascade_stages` randomised (head first, embedding
    last); the text tower and ``model`` itself are untouched. Each copy is independent.
    """
    randomised = copy.deepcopy(model)
    cuda_devices = sorted({p.device.index or 0 for p in randomised.parameters() if p.is_cuda})
    visual = randomised.visual
    assert isinstance(visual, torch.nn.Module)
    for index, (label, names) in enumerate(cascade_stages(visual)):
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed + index)
            for name in names:
                reinitialise(attribute(visual, name))
        yield label, copy.deepcopy(randomised)


def map_similarity(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Spearman rank correlation and SSIM between paired maps ``[..., H, W]`` (values in [0, 1]).

    Returns ``spearman`` and ``ssim`` of the leading shape; Spearman is NaN for a constant map.
    """
    a, b = as_numpy(a).astype(np.float64), as_numpy(b).astype(np.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"maps must have equal shapes [..., H, W], got {a.shape} and {b.shape}")
    leading = a.shape[:-2]
    flat_a, flat_b = a.reshape(-1, a.shape[-2] * a.shape[-1]), b.reshape(-1, b.shape[-2] * b.shape[-1])
    with warnings.catch_warnings():  # a constant map has no ranking: NaN, without a warning per map
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        spearman = stats.pearsonr(stats.rankdata(flat_a, axis=1), stats.rankdata(flat_b, axis=1), axis=1).statistic
    images_a, images_b = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    ssim = np.array([structural_similarity(x, y, data_range=1.0) for x, y in zip(images_a, images_b)])
    return {"spearman": spearman.reshape(leading), "ssim": ssim.reshape(leading)}


def cascade_similarity(
    loaded: LoadedModel,
    pixels: torch.Tensor,
    text: torch.Tensor,
    methods: Sequence[str],
    settings: Mapping[str, Any],
    seed: int = 0,
) -> pd.DataFrame:
    """Similarity of each method's maps to the intact model's along the cascading randomisation.

    Each image is explained for its zero-shot top class under the intact model (texts ``[C, D]``);
    every stage of :func:`randomise_layers_cascade` recomputes the maps of the same (image, text)
    pairs. One row per (stage, method, image): ``spearman`` and ``ssim`` of :func:`map_similarity`.
    """
    targets = (encode_pixels(loaded, pixels).cpu() @ text.T).argmax(dim=1)
    chosen, pair = torch.unique(targets, return_inverse=True)
    size = (pixels.shape[-2], pixels.shape[-1])
    rows = torch.arange(len(pixels))

    def maps_of(model: LoadedModel) -> dict[str, np.ndarray]:
        return {
            m: render_scores(method_scores(model, m, pixels, text[chosen], settings), size)[rows, pair].numpy() for m in methods
        }

    original = maps_of(loaded)
    frames = []
    for stage, randomised in randomise_layers_cascade(loaded.model, seed):
        for method, maps in maps_of(dataclasses.replace(loaded, model=randomised)).items():
            measures = map_similarity(original[method], maps)
            frames.append(pd.DataFrame({"stage": stage, "method": method, "image": rows.numpy(), **measures}))
    return pd.concat(frames, ignore_index=True)
