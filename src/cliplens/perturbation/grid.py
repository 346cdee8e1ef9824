"""The perturbation grid: cells (family x severity x seed) and the plan table."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cliplens.planning import CLEAN

if TYPE_CHECKING:  # the families (torch) are imported where applied: planning a grid needs no torch
    import torch


@dataclass(frozen=True)
class PerturbationSpec:
    """One cell of the perturbation grid; family 'clean' with severity 0 is the unperturbed image."""

    family: str
    severity: int
    seed: int
    params: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


CLEAN_SPEC = PerturbationSpec(CLEAN, 0, 0)


def family_specs(
    family: str, severities: Sequence[int], seeds: Sequence[int], params: Mapping[str, Any]
) -> list[PerturbationSpec]:
    """The grid cells of one family (or the single clean cell)."""
    if family == CLEAN:
        return [CLEAN_SPEC]
    return [PerturbationSpec(family, s, seed, params) for s in sorted(severities) for seed in seeds]


def plan_table(image_ids: Sequence[str], grid: Mapping[str, Any]) -> pd.DataFrame:
    """One row per image x family x severity x seed (clean rows included), in a stable order."""
    cells = [(CLEAN, 0, 0)] + [
        (family, severity, seed)
        for family in grid["families"]
        for severity in sorted(grid["severities"])
        for seed in grid["seeds"]
    ]
    ids = np.asarray(image_ids, dtype=object)
    return pd.DataFrame(
        {
            "image_id": np.tile(ids, len(cells)),
            "family": np.repeat([c[0] for c in cells], len(ids)),
            "severity": np.repeat([c[1] for c in cells], len(ids)).astype("int16"),
            "seed": np.repeat([c[2] for c in cells], len(ids)).astype("int64"),
        }
    )


def apply_spec(
    pixels: torch.Tensor,
    image_ids: Sequence[str],
    spec: PerturbationSpec,
    masks: torch.Tensor | None = None,
    backend: str = "torch",
) -> torch.Tensor:
    """Apply one grid cell to a batch of pixels, [0, 1] floats or 8-bit ones (see
    :func:`~cliplens.perturbation.families.perturb`): [0, 1] floats (clean: the pixels' own)."""
    from cliplens.perturbation.families import image_seeds, perturb, perturb_imagecorruptions
    from cliplens.pixels import unit_pixels

    if spec.family == CLEAN or spec.severity == 0:
        return unit_pixels(pixels)

    seeds = image_seeds(image_ids, spec.family, spec.severity, spec.seed).to(pixels.device)
    if backend == "imagecorruptions":
        return perturb_imagecorruptions(pixels, spec.family, spec.severity, seeds)
    return perturb(pixels, spec.family, spec.severity, seeds, spec.params, masks)


def reads_bytes(family: str, backend: str = "torch") -> bool:
    """Whether the embedding step hands a family the decoded 8-bit pixels rather than [0, 1] floats."""
    if family == CLEAN or backend != "torch":
        return False
    from cliplens.perturbation.families import FAMILIES

    return FAMILIES[family].reads_bytes


def family_inputs(eight_bit: torch.Tensor, backend: str = "torch") -> Callable[[str], torch.Tensor]:
    """The input each family gets from a decoded batch (8-bit ``[B, 3, H, W]``): the bytes themselves
    for families that read bytes (JPEG), else [0, 1] floats, converted once, when first asked for."""
    from cliplens.pixels import unit_pixels

    floats = functools.cache(functools.partial(unit_pixels, eight_bit))
    return lambda family: eight_bit if reads_bytes(family, backend) else floats()


def needs_mask(family: str) -> bool:
    """Whether a family needs segmentation masks (object/background masking)."""
    if family == CLEAN:
        return False
    from cliplens.perturbation.families import FAMILIES

    return FAMILIES[family].needs_mask
