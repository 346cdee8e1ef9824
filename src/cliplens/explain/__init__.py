"""CLIP Surgery (Li et al., Pattern Recognition 2025) and its baselines: raw CLIP and Grad-CAM maps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Nothing beyond the schema: the methods are an enum there (called before any job runs)."""
