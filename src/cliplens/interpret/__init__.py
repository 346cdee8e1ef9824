"""Head-level interpretation: the decomposition and TEXTSPAN (Gandelsman et al., ICLR 2024) and the
CLIP-InterpreT analyses (Madasu et al., 2024).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cliplens.config import ConfigError


def validate_config(cfg: Mapping[str, Any]) -> None:
    """The text pool and the property descriptions must be readable; queried properties must exist
    (called before any job runs)."""
    interpret_cfg = cfg["interpret"]
    from cliplens.textpools import (
        POOL_NAMES,
        TEXTSPAN_POOLS,
        PoolUnavailableError,
        load_properties,
        textspan_pool_path,
    )

    pool, pool_dir = interpret_cfg["textspan"]["pool"], interpret_cfg["textspan"]["pool_dir"]
    try:
        if pool in TEXTSPAN_POOLS:
            textspan_pool_path(pool, pool_dir)
        elif pool != "builtin" and not Path(pool).expanduser().is_file():
            raise PoolUnavailableError(f"{pool!r} is neither a file nor one of {list(POOL_NAMES)}")
    except PoolUnavailableError as error:
        raise ConfigError(f"interpret.textspan.pool: {error}") from error
    path = interpret_cfg["properties"]
    if path is not None and not Path(path).expanduser().is_file():
        raise ConfigError(f"interpret.properties={path!r} is not a file")
    try:
        properties = load_properties(path)
    except ValueError as error:
        raise ConfigError(f"interpret.properties: {error}") from error
    if len(properties) < 2:
        raise ConfigError(f"interpret.properties: at least two properties are needed; found {sorted(properties)}")
    unknown = sorted(set(interpret_cfg["queries"]["properties"]) - set(properties))
    if unknown:
        raise ConfigError(f"interpret.queries.properties: {unknown} unknown; valid: {sorted(properties)}")
