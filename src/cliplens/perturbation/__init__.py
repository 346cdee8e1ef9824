"""Perturbation analysis (Ameh, 2025): families x severities, embeddings, statistics, drift, figures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cliplens.config import ConfigError


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Every configured family must exist and take its parameters (called before any job runs)."""
    from cliplens.perturbation.families import resolve_params

    for family, params in cfg["perturbation"]["families"].items():
        try:
            resolve_params(family, params or {})
        except ValueError as error:
            raise ConfigError(f"perturbation.families.{family}: {error}") from error
