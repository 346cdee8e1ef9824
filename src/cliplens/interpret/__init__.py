"""Head-level interpretation: the decomposition and TEXTSPAN (Gandelsman et al., ICLR 2024) and the
CLIP-InterpreT analyses (Madasu et al., 2024).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def validate_config(cfg: Mapping[str, Any]) -> None:
    """The text pool and the property descriptions must be readable; queried properties must exist
    (called before any job runs)."""
    from cliplens.config import ConfigError  # here: every interpretation job imports this package, only planning validates
    from cliplens.textpools import (
        POOL_NAMES,
        TEXTSPAN_POOLS,
        PoolUnavailableError,
        load_properties,
        textspan_pool_path,
    )

    interpret_cfg = cfg["interpret"]

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
    for model_cfg in cfg["model_grid"].values():
        _validate_heads(interpret_cfg, model_cfg)


def _validate_heads(interpret_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> None:
    """``interpret.queries.heads`` must name heads the model has and the decomposition stores
    (every layer with ``store_all_heads``, else the last ``layers``); checked where the architecture is known."""
    from cliplens.architectures import architecture_config
    from cliplens.config import ConfigError
    from cliplens.planning import decomposable

    requested = interpret_cfg["queries"]["heads"]
    vision = (architecture_config(model_cfg.get("arch")) or {}).get("vision_cfg", {})
    if not requested or not decomposable(model_cfg) or not isinstance(vision.get("layers"), int):
        return
    num_layers, num_heads = vision["layers"], vision["width"] // vision.get("head_width", 64)
    stored = (
        range(num_layers) if interpret_cfg["store_all_heads"] else range(max(0, num_layers - interpret_cfg["layers"]), num_layers)
    )
    bad = [
        [layer, head]
        for layer, head in requested
        if not -num_layers <= layer < num_layers or layer % num_layers not in stored or not 0 <= head < num_heads
    ]
    if bad:
        raise ConfigError(
            f"interpret.queries.heads: {bad} not available for model {model_cfg['name']!r}: layers "
            f"{stored.start}..{stored.stop - 1} (or -{num_layers - stored.start}..-1 from the end), heads 0..{num_heads - 1}"
            + ("" if interpret_cfg["store_all_heads"] else "; interpret.store_all_heads=true stores every layer")
        )
