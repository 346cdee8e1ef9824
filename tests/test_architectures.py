"""cliplens.architectures reads open_clip's architecture registry without importing open_clip: it
must agree with open_clip's own registry, cliplens' configs included, name for name."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import open_clip
import pytest

import cliplens.models  # noqa: F401  (registers cliplens' configs with open_clip)
from cliplens import architectures
from cliplens.architectures import architecture_config, known_architectures


def test_known_architectures_are_open_clips_in_its_order() -> None:
    names = known_architectures()
    assert names == open_clip.list_models()
    assert {"ViT-B-32", "RN50", "cliplens-tiny-vit", "cliplens-tiny-rn", "cliplens-planted-vit"} <= set(names)


def test_every_config_equals_open_clips() -> None:
    for name in known_architectures():
        assert architecture_config(name) == open_clip.get_model_config(name), name


@pytest.mark.parametrize("name", [None, "", "ViT-B-33", "hf-hub:org/repo"])
def test_an_unknown_or_missing_architecture_has_no_config(name) -> None:
    assert architecture_config(name) is None


def test_a_config_is_a_copy() -> None:
    config = architecture_config("ViT-B-32")
    config["vision_cfg"]["layers"] = 1
    assert architecture_config("ViT-B-32")["vision_cfg"]["layers"] == 12


def test_an_open_clip_without_its_config_folder_is_named(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: SimpleNamespace(submodule_search_locations=[str(tmp_path)]))
    with pytest.raises(ModuleNotFoundError, match="open_clip has no architecture configs at"):
        architectures._open_clip_config_dir()
