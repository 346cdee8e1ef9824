"""Configuration: Hydra composes the config tree, cliplens validates it and hands plain dicts on.

Snakemake's ``--config key=value`` pairs (and ``--configfile`` contents) become Hydra overrides,
so ``snakemake --config model=vit_b_16_openai dataset__mirror=path/to/x`` works as in any Hydra app
(``__`` stands for the dot, which Snakemake does not accept in a key).
Everything is validated before a job runs: unknown keys, unknown config-group options and
out-of-range values fail with a message that names the key and the valid choices.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import jsonschema
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

LINES = ("perturbation", "explain", "interpret")
"""The analysis lines: each package validates its own config section (``validate_config``).
"""
GROUPS = ("model", "dataset", "perturbation", "explain", "interpret")
REPLACED_MAPPINGS = ("perturbation.families", "drift.label_sets")
"""Mappings a user sets as a whole (``perturbation__families={blur: {}}`` replaces the families)."""


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the valid choices."""


def group_options(config_dir: Path, group: str) -> list[str]:
    """Selectable options of a config group (files starting with '_' are building blocks)."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml") if not p.stem.startswith("_"))


def _format_value(value: Any) -> str:
    """Render a Python value in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_format_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if re.fullmatch(r"[\w./\-+:@~]+", text):  # Hydra reads it as it would from a command line
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


KEY_SEPARATOR = "__"
"""Snakemake's ``--config`` accepts only identifiers as keys, so ``a__b=1`` stands for ``a.b=1``."""


def overrides_from_mapping(config: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Turn Snakemake's config dict into Hydra overrides; nested mappings become dotted keys.

    ``__`` in a key stands for a dot (``--config dataset__path=/x`` is ``dataset.path=/x``);
    a plain value of a config group (``model: vit_b_16_openai``) selects that option.
    """
    overrides = []
    for key, value in config.items():
        dotted = f"{prefix}{str(key).replace(KEY_SEPARATOR, '.')}"
        if isinstance(value, Mapping) and value and dotted not in REPLACED_MAPPINGS:
            overrides.extend(overrides_from_mapping(value, prefix=f"{dotted}."))
        else:
            overrides.append(f"{dotted}={_format_value(value)}")
    return overrides


def _compose(config_dir: Path, overrides: list[str]) -> dict[str, Any]:
    key: str | re.Match[str] | None
    for override in overrides:
        key, _, value = override.partition("=")
        if key in GROUPS and value not in group_options(config_dir, key):
            raise ConfigError(f"{key}={value!r} is not a known {key} config; valid: {group_options(config_dir, key)}")
    try:
        with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        return cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    except (HydraException, OmegaConfBaseException) as error:
        message = str(error).split("\n")[0]
        key = getattr(error, "full_key", None) or re.search(r"override '([^']+)'", message)
        key = key.group(1) if isinstance(key, re.Match) else key
        hint = ""
        if key and "Could not override" in message:
            hint = f" (unknown key {key!r}; {_valid_keys_hint(config_dir, key)})"
        elif "Missing mandatory value" in message:
            message = f"{key} is missing"
            hint = f" (set it: {key}=... with cliplens run, --config {str(key).replace('.', KEY_SEPARATOR)}=... with snakemake)"
        raise ConfigError(f"invalid configuration: {message}{hint}") from error


def _valid_keys_hint(config_dir: Path, dotted: str) -> str:
    parent, _, leaf = dotted.rpartition(".")
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        base = OmegaConf.to_container(compose("config"), resolve=False)
    node = base
    for part in filter(None, parent.split(".")):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    valid = sorted(node) if isinstance(node, dict) else []
    close = difflib.get_close_matches(leaf, valid, n=1)
    return (f"did you mean {close[0]!r}? " if close else "") + f"valid keys here: {valid}"


def schema_path(config_dir: Path) -> Path:
    """The JSON schema of a resolved config: workflow/schemas/ beside the config tree."""
    return config_dir.resolve().parent / "workflow" / "schemas" / "config.schema.yaml"


def _schema_error_message(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "<root>"
    if error.validator == "type" and "integer" in (error.validator_value or []) and isinstance(error.instance, float):
        return f"{key}={error.instance!r} must be a whole number written without a decimal point or exponent"
    if error.validator in ("minItems", "maxItems"):
        bounds = (error.schema.get("minItems"), error.schema.get("maxItems"))
        if bounds[0] == bounds[1]:
            needed = f"exactly {bounds[0]}"
        else:
            needed = f"at least {bounds[0]}" if error.validator == "minItems" else f"at most {bounds[1]}"
        per_severity = " (one per severity 1-5)" if bounds == (5, 5) else ""
        return f"{key}: {needed} values needed{per_severity}; {len(error.instance)} given: {error.instance!r}"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"unknown key {key}.{extra[0]} ; valid keys in {key}: {allowed}".replace("<root>.", "")
    if error.validator == "enum":
        return f"{key}={error.instance!r} is not valid; valid choices: {error.validator_value}"
    if error.validator == "pattern" and "description" in error.schema:  # the choices in words, not the regex
        return f"{key}={error.instance!r} is not valid; valid choices: {error.schema['description']}"
    return f"{key}: {error.message}"


def _is_strict_integer(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


STRICT_VALIDATOR = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer),
)
"""Draft 2020-12 with one change: an integer key rejects floats such as 6.0 or 1e3 (JSON Schema
would accept a float with no fractional part), so a typo never reaches a job as a float."""


def validate(cfg: Mapping[str, Any], schema: Mapping[str, Any], check_registries: bool = True) -> None:
    """Check a resolved config against the schema (template sets included) and, unless told not to,
    the registries of models and perturbations (open_clip is imported only to check a pretrained
    tag); raise ConfigError on the first problem."""
    validator = STRICT_VALIDATOR(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise ConfigError(_schema_error_message(errors[0]))
    if not check_registries:
        return
    for model_cfg in cfg["model_grid"].values():
        _validate_model(model_cfg)
    _validate_dataset(cfg["dataset"])
    for line in LINES:
        importlib.import_module(f"cliplens.{line}").validate_config(cfg)


def _validate_model(model_cfg: Mapping[str, Any]) -> None:
    from cliplens.architectures import known_architectures

    arch = model_cfg["arch"]
    if model_cfg["source"] != "checkpoint" or arch is not None:
        known = known_architectures()
        if arch not in known:
            close = difflib.get_close_matches(arch, known, n=5)
            raise ConfigError(
                f"model.arch={arch!r} is not an open_clip architecture; closest: {close} "
                "(all: python -c 'import open_clip; print(open_clip.list_models())')"
            )
    if model_cfg["source"] == "open_clip":
        import open_clip  # its pretrained registry is code: imported only for pretrained models

        tags = open_clip.list_pretrained_tags_by_model(arch)
        if model_cfg["pretrained"] not in tags:
            raise ConfigError(f"model.pretrained={model_cfg['pretrained']!r} unknown for {arch}; valid: {tags}")
    if model_cfg["source"] == "checkpoint":
        path = model_cfg["checkpoint"]
        if not path or not Path(path).expanduser().is_file():
            raise ConfigError(f"model.checkpoint={path!r} is not a file")


def validate_device(model_cfg: Mapping[str, Any]) -> None:
    """The configured device must exist on this machine (checked where jobs run locally)."""
    import torch

    device = model_cfg["device"]
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= available:
            raise ConfigError(
                f"model.device={device!r} but this machine has {available} CUDA devices; "
                "use model.device=auto (CUDA when present, else CPU) or model.device=cpu"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("model.device='mps' but MPS is not available here; use model.device=auto or cpu")


def _check_directory(key: str, value: str | None) -> None:
    if value is None:
        return
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(f"dataset.{key}={value!r} does not exist (resolved: {path.absolute()})")
    if not path.is_dir():
        raise ConfigError(f"dataset.{key}={value!r} is a file; give the folder that holds the images")


def _validate_dataset(dataset_cfg: Mapping[str, Any]) -> None:
    from cliplens.datasets import DatasetError, read_labels_csv

    csv = dataset_cfg.get("labels_csv")
    if csv is not None:
        if not Path(csv).expanduser().is_file():
            raise ConfigError(f"dataset.labels_csv={csv!r} is not a file")
        try:
            read_labels_csv(csv)
        except DatasetError as error:
            raise ConfigError(f"dataset.labels_csv: {error}") from error


def _split_replacements(overrides: list[str]) -> tuple[list[str], dict[str, Any], list[tuple[str, Any]]]:
    """Separate overrides that replace a whole user-extensible mapping (Hydra would merge them);
    let keys inside those mappings be added, not only overridden. Returns (Hydra overrides,
    replaced mappings, edits inside a replaced mapping: applied to the replacement, not lost)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    def value(override: str) -> Any:
        return OverridesParser.create().parse_overrides([override])[0].value()

    kept, replacements, nested = [], {}, []
    for override in overrides:
        key = override.partition("=")[0]
        if key in REPLACED_MAPPINGS:
            replacements[key] = value(override)
        elif key.startswith(tuple(f"{m}." for m in REPLACED_MAPPINGS)):
            nested.append(override)
        else:
            kept.append(override)
    edits = []
    for override in nested:
        key = override.partition("=")[0]
        if any(key.startswith(f"{mapping}.") for mapping in replacements):
            edits.append((key, value(override)))
        else:
            kept.append(f"++{override}")  # entries of these mappings may be new (validated later)
    return kept, replacements, edits


def _set_dotted(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


def compose_config(config_dir: str | Path, overrides: Iterable[str] = (), check_registries: bool = True) -> dict[str, Any]:
    """Compose, expand the model grid and validate; returns a plain, fully resolved dict.

    ``check_registries=False`` skips the (slow) registry checks: for jobs re-reading an already
    validated workflow.
    """
    config_dir = Path(config_dir)
    overrides, replacements, edits = _split_replacements(list(overrides))
    cfg = _compose(config_dir, overrides)
    for dotted, value in [*replacements.items(), *edits]:
        _set_dotted(cfg, dotted, value)
    grid = {cfg["model"]["name"]: cfg["model"]}
    for option in cfg.get("models") or []:
        if option not in group_options(config_dir, "model"):
            raise ConfigError(f"models: {option!r} is not a model config; valid: {group_options(config_dir, 'model')}")
        model_overrides = [o for o in overrides if not o.startswith(("model=", "model."))]
        model_cfg = _compose(config_dir, model_overrides + [f"model={option}"])["model"]
        grid[model_cfg["name"]] = model_cfg
    for model_cfg in grid.values():
        if model_cfg["source"] == "planted":
            model_cfg["checkpoint"] = planted_checkpoint(cfg["results_dir"], model_cfg["name"])
    cfg["model_grid"] = grid
    cfg["dataset"]["num_images"] = resolve_num_images(cfg["dataset"])
    validate(cfg, yaml.safe_load(schema_path(config_dir).read_text()), check_registries)
    return cfg


def resolve_num_images(dataset_cfg: Mapping[str, Any]) -> int:
    """Declared dataset size, or for a folder the number of image files in it (cheap: a directory walk).

    The folder (and a mirror) must exist and, for a folder, hold at least one image file.
    """
    _check_directory("mirror", dataset_cfg.get("mirror"))
    if dataset_cfg.get("num_images") is not None:
        return dataset_cfg["num_images"]  # the schema checks its type
    if dataset_cfg["kind"] == "folder" and dataset_cfg["path"] is None:
        raise ConfigError("dataset=folder needs dataset.path=/some/dir")
    from cliplens.datasets import IMAGE_SUFFIXES, count_image_files

    _check_directory("path", dataset_cfg["path"])
    count = count_image_files(Path(dataset_cfg["path"]).expanduser())
    if count == 0:
        raise ConfigError(
            f"dataset.path={dataset_cfg['path']!r} holds no image file (searched recursively for {sorted(IMAGE_SUFFIXES)})"
        )
    return count


def planted_checkpoint(results_dir: str, model: str) -> str:
    """Where the workflow writes the checkpoint of a model it trains on the planted world."""
    return f"{results_dir}/models/{model}/checkpoint.pt"
