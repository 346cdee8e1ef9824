"""Hydra composition, Snakemake-style overrides and validation errors."""

from __future__ import annotations

import pytest
from conftest import ROOT

from cliplens.config import ConfigError, compose_config, overrides_from_mapping
from cliplens.planning import num_shards

CONFIG = ROOT / "config"


def test_default_config_composes_with_documented_defaults():
    cfg = compose_config(CONFIG)
    assert cfg["model"]["arch"] == "ViT-B-32" and cfg["model"]["pretrained"] == "openai"
    assert cfg["dataset"]["name"] == "skimage_samples"
    assert list(cfg["model_grid"]) == ["vit_b_32_openai"]
    # the authors' released behaviour by default (docs/methods.md, section 1.1)
    assert cfg["interpret"]["textspan"]["criterion"] == "reference"
    assert cfg["interpret"]["constant_split"] == "reference"
    assert cfg["explain"]["resnet_surgery"] == "reference"


def test_snakemake_config_becomes_hydra_overrides():
    overrides = overrides_from_mapping(
        {"model": "tiny_random", "model__seed": 3, "stats": {"top_k": 2}, "drift": {"label_sets": {"x": ["a b", "it's"]}}}
    )
    assert overrides == [
        "model=tiny_random",
        "model.seed=3",
        "stats.top_k=2",
        "drift.label_sets={x:['a b','it\\'s']}",
    ]
    cfg = compose_config(CONFIG, overrides)
    assert cfg["model"]["seed"] == 3 and cfg["stats"]["top_k"] == 2
    assert cfg["drift"]["label_sets"] == {"x": ["a b", "it's"]}  # replaced, not merged


def test_families_mapping_replaces_the_grid_and_nested_keys_edit_one_family():
    replaced = compose_config(CONFIG, overrides_from_mapping({"perturbation__families": {"contrast": {}, "fog": None}}))
    assert list(replaced["perturbation"]["families"]) == ["contrast", "fog"]
    edited = compose_config(CONFIG, ["perturbation.families.rotation.degrees=[1,2,3,4,6]"])
    assert edited["perturbation"]["families"]["rotation"]["degrees"] == [1, 2, 3, 4, 6]
    assert len(edited["perturbation"]["families"]) > 2
    added = compose_config(CONFIG, ["perturbation=smoke", "perturbation.families.contrast.factor=[0.5,0.4,0.3,0.2,0.1]"])
    assert added["perturbation"]["families"]["contrast"] == {"factor": [0.5, 0.4, 0.3, 0.2, 0.1]}
    with pytest.raises(ConfigError, match="factor"):
        compose_config(CONFIG, ["perturbation=smoke", "perturbation.families.contrast.amount=[1,2,3,4,5]"])


def test_a_nested_family_edit_applies_to_a_replaced_family_mapping():
    cfg = compose_config(
        CONFIG, ["perturbation.families={contrast: {}, rotation: {}}", "perturbation.families.rotation.degrees=[2,4,8,16,32]"]
    )
    assert cfg["perturbation"]["families"] == {"contrast": {}, "rotation": {"degrees": [2, 4, 8, 16, 32]}}


def test_model_grid_composes_each_model():
    cfg = compose_config(CONFIG, ["model=tiny_random", "models=[tiny_random_resnet,vit_b_16_openai]"])
    assert list(cfg["model_grid"]) == ["tiny_random", "tiny_random_resnet", "vit_b_16_openai"]
    assert cfg["model_grid"]["vit_b_16_openai"]["arch"] == "ViT-B-16"


def test_open_clip_model_name_derives_from_arch_and_tag():
    cfg = compose_config(CONFIG, ["model=open_clip", "model.arch=ViT-B-16", "model.pretrained=laion2b_s34b_b88k"])
    assert cfg["model"]["name"] == "ViT-B-16__laion2b_s34b_b88k"


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["model=vit_huge"], ["model='vit_huge'", "tiny_random", "vit_b_32_openai"]),
        (["dataset=cifar"], ["dataset='cifar'", "imagenet_samples", "folder"]),
        (["stats.top_kk=3"], ["stats.top_kk", "did you mean 'top_k'", "n_boot"]),
        (["+stats.extra=1"], ["unknown key stats.extra", "top_k"]),
        (["embedding.dtype=int8"], ["embedding.dtype", "float16", "float32"]),
        (["interpret.textspan.criterion=unit"], ["interpret.textspan.criterion", "reference", "normalised"]),
        (["interpret.constant_split=even"], ["interpret.constant_split", "reference", "uniform"]),
        (["explain.resnet_surgery=released"], ["explain.resnet_surgery", "reference", "paper"]),
        (["perturbation.severities=[0,6]"], ["perturbation.severities"]),
        (["model.arch=ViT-B-33"], ["ViT-B-33", "ViT-B-32"]),
        (["model=planted_clip", "model.training.paired_attributes=[hue]"], ["model.training.paired_attributes", "shape"]),
        (["model.pretrained=imagenet"], ["imagenet", "openai", "laion2b"]),
        (["model.precision=fp8"], ["model.precision", "bf16"]),
        (["model.device=gpu"], ["model.device='gpu'", "auto, cpu, cuda, cuda:<index> or mps"]),
        (["embedding.templates=fancy"], ["fancy", "openai_imagenet"]),
        (["dataset=folder"], ["dataset.path"]),
        (["dataset.mirror=/does/not/exist"], ["dataset.mirror", "does not exist"]),
        (["model=checkpoint"], ["model.checkpoint"]),
        (["perturbation.families={warp:{}}"], ["warp", "gaussian_noise"]),
        (["perturbation.families={rotation:{angle:[1,2,3,4,5]}}"], ["angle", "degrees"]),
    ],
)
def test_invalid_config_fails_naming_key_and_choices(overrides, fragments):
    with pytest.raises(ConfigError) as error:
        compose_config(CONFIG, overrides)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_folder_dataset_counts_images_for_sharding(tmp_path):
    for i in range(7):
        (tmp_path / f"{i}.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    cfg = compose_config(CONFIG, ["dataset=folder", f"dataset.path={tmp_path}", "embedding.shard_size=3"])
    assert cfg["dataset"]["num_images"] == 7
    assert num_shards(7, 3) == 3
    assert num_shards(0, 3) == 1


def test_string_values_from_the_snakemake_command_line_are_typed_by_hydra():
    # Snakemake YAML-parses --config values with the base loader: scalars inside lists stay strings
    overrides = overrides_from_mapping(
        {
            "model": "tiny_random",
            "model__trust_torchscript": "true",
            "explain__max_images": "8",
            "perturbation__severities": ["1", "3"],
        }
    )
    cfg = compose_config(CONFIG, overrides)
    assert cfg["model"]["trust_torchscript"] is True
    assert cfg["explain"]["max_images"] == 8 and cfg["perturbation"]["severities"] == [1, 3]


def test_schema_choices_are_the_codes_registries():
    """The schema names the valid values of keys whose registries live in code; both must agree."""
    import yaml

    from cliplens.config import schema_path
    from cliplens.models import CHECKPOINT_FORMATS, PRECISIONS, SOURCES
    from cliplens.text import TEMPLATE_SETS

    schema = yaml.safe_load(schema_path(CONFIG).read_text())
    model = schema["$defs"]["model"]["properties"]
    assert schema["$defs"]["templates"]["enum"] == list(TEMPLATE_SETS)
    assert model["source"]["enum"] == list(SOURCES)
    assert model["checkpoint_format"]["enum"] == list(CHECKPOINT_FORMATS)
    assert model["precision"]["enum"] == list(PRECISIONS)


@pytest.mark.parametrize("key", ["embedding.templates", "explain.templates", "interpret.textspan.templates"])
def test_every_templates_key_names_the_template_sets(key):
    with pytest.raises(ConfigError, match=rf"{key}='fancy' is not valid; valid choices: \['openai_imagenet', 'simple'"):
        compose_config(CONFIG, ["model=tiny_random", f"{key}=fancy"])
