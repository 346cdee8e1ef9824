"""Perturbation analysis (Ameh, 2025): families x severities, embeddings, statistics, drift, figures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Domain:
    """The values a family parameter may take: an interval (open or closed at each end), maybe whole numbers."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    whole: bool = False

    def contains(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below and (not self.whole or float(value).is_integer())

    def __str__(self) -> str:
        interval = f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        return f"whole numbers in {interval}" if self.whole else interval


NON_NEGATIVE = Domain(0)
POSITIVE = Domain(0, low_open=True)
UNIT = Domain(0, 1)
POSITIVE_FRACTION = Domain(0, 1, low_open=True)

PARAMETER_DOMAINS: dict[tuple[str, str], Domain] = {
    ("gaussian_noise", "sigma"): NON_NEGATIVE,
    ("shot_noise", "photons"): Domain(0, 10_000, low_open=True),
    ("impulse_noise", "amount"): UNIT,
    ("gaussian_blur", "sigma"): NON_NEGATIVE,
    ("defocus_blur", "radius"): NON_NEGATIVE,
    ("defocus_blur", "alias_blur"): POSITIVE,
    ("motion_blur", "radius"): NON_NEGATIVE,
    ("motion_blur", "sigma"): POSITIVE,
    ("brightness", "delta"): Domain(-1, 1),
    ("contrast", "factor"): NON_NEGATIVE,
    ("saturate", "factor"): NON_NEGATIVE,
    ("jpeg_compression", "quality"): Domain(1, 100, whole=True),
    ("pixelate", "factor"): POSITIVE_FRACTION,
    ("elastic_transform", "alpha"): NON_NEGATIVE,
    ("fog", "strength"): NON_NEGATIVE,
    ("fog", "decay"): POSITIVE,
    ("zoom", "scale"): POSITIVE_FRACTION,
    ("translation", "shift"): UNIT,
    ("crop", "fraction"): POSITIVE_FRACTION,
    ("patch_grid", "fraction"): UNIT,
    ("patch_grid", "cells"): Domain(1, 64, whole=True),
    ("patch_grid", "fill"): UNIT,
    ("cutout", "size"): UNIT,
    ("cutout", "fill"): UNIT,
    ("object_mask", "opacity"): UNIT,
    ("object_mask", "fill"): UNIT,
    ("background_mask", "opacity"): UNIT,
    ("background_mask", "fill"): UNIT,
    ("grayscale", "strength"): UNIT,
    ("hue_shift", "shift"): Domain(-0.5, 0.5),
    ("invert", "threshold"): UNIT,
}
"""Valid values of each family parameter whose meaning bounds it (a sigma is not negative, a JPEG
quality is a whole number from 1 to 100, a zoom scale or pixelate factor of 0 leaves no image);
parameters not listed take any finite number."""


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Every configured family must exist and take its parameters, each value inside its domain
    (called before any job runs)."""
    from cliplens.config import ConfigError  # here: every perturbation job imports this package, only planning validates
    from cliplens.perturbation.families import resolve_params

    for family, params in cfg["perturbation"]["families"].items():
        try:
            resolve_params(family, params or {})
        except ValueError as error:
            raise ConfigError(f"perturbation.families.{family}: {error}") from error
