"""open_clip's architecture registry, read without importing open_clip.

Planning a run (Snakefile parsing, config validation) only needs an architecture's name and its
config: whether it is a ViT with CLS pooling, how many layers and heads it has. Importing
open_clip to ask costs about 2.5 s (it imports torchvision, timm and ``torch._dynamo``), paid by
every ``snakemake`` invocation and, on a cluster, twice by every job. The registry itself is a
folder of JSON files in the open_clip package, which this module reads the way open_clip does:
a file counts when it has ``embed_dim``, ``vision_cfg`` and ``text_cfg``, and names sort
naturally (digits as numbers). cliplens' own configs (the tiny and planted models) are added to
both registries. ``tests/test_architectures.py`` checks that both agree name for name.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
"""cliplens' own architecture configs (also registered with open_clip by :mod:`cliplens.models`)."""

_REQUIRED_KEYS = ("embed_dim", "vision_cfg", "text_cfg")


def _open_clip_config_dir() -> Path:
    """The ``model_configs`` folder of the installed open_clip package (found, not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open_clip is not installed (pip install open_clip_torch)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    if not folder.is_dir():  # a future open_clip may keep them elsewhere: fail loudly, not with an empty registry
        raise ModuleNotFoundError(f"open_clip has no architecture configs at {folder}; cliplens reads them from there")
    return folder


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


@functools.cache
def _registry() -> dict[str, dict[str, Any]]:
    configs = {}
    for folder in (_open_clip_config_dir(), MODEL_CONFIG_DIR):
        for path in folder.glob("*.json"):
            config = json.loads(path.read_text())
            if all(key in config for key in _REQUIRED_KEYS):
                configs[path.stem] = config
    return dict(sorted(configs.items(), key=lambda item: _natural_key(item[0])))


def known_architectures() -> list[str]:
    """open_clip architecture names, cliplens' tiny and planted models included (``open_clip.list_models()``)."""
    return list(_registry())


def architecture_config(name: str | None) -> dict[str, Any] | None:
    """A copy of the config of architecture ``name`` (``open_clip.get_model_config``), None if unknown."""
    config = _registry().get(name) if name else None
    return copy.deepcopy(config) if config is not None else None
