"""The ``cliplens`` command: Hydra's override grammar in front of the Snakemake workflow, and the explorer.

``cliplens run`` parses its overrides with Hydra's own parser, turns them into the ``--config key__sub=value``
pairs the Snakefile already reads, composes and validates the config the workflow will see, and then runs
``snakemake`` with those pairs: a run, a rerun after a change and a dry run are those of
``snakemake --config ...`` with the same pairs.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

from cliplens.config import (
    KEY_SEPARATOR,
    REPLACED_MAPPINGS,
    ConfigError,
    compose_config,
    group_options,
    overrides_from_mapping,
    schema_path,
)

SWEEPABLE = "model"
"""The one config group a sweep (``model=a,b``) may range over: the extra models become the model grid."""
INTERRUPTED = 128 + signal.SIGINT
"""Exit status of an interrupted run (the shell's for SIGINT), whatever snakemake returned after it."""
CORE_OPTIONS = ("-c", "--cores", "-j", "--jobs", "--profile", "--executor", "-e")
"""Snakemake options that settle how many jobs run; without one, ``cliplens run`` adds ``--cores all``."""


def workflow_dir(snakemake_args: Sequence[str] = ()) -> Path:
    """The folder of the Snakefile run: ``-s``/``--snakefile``, else the current folder's, else this checkout's."""
    for i, arg in enumerate(snakemake_args):
        if arg in ("-s", "--snakefile") and i + 1 < len(snakemake_args):
            return Path(snakemake_args[i + 1]).resolve().parent
        if arg.startswith("--snakefile="):
            return Path(arg.split("=", 1)[1]).resolve().parent
    for folder in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (folder / "Snakefile").is_file() and (folder / "config" / "config.yaml").is_file():
            return folder
    raise ConfigError("no cliplens workflow here: run in the repository, or pass -- -s /path/to/Snakefile")


def parse_overrides(overrides: Sequence[str]) -> list[Override]:
    """Hydra's own parse of command-line overrides; a syntax error names the override."""
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except HydraException as error:
            raise ConfigError(f"cannot parse override {text!r}: {str(error).splitlines()[0]}") from None
    return parsed


def _expand_model_sweep(parsed: list[Override]) -> list[str]:
    """Plain Hydra overrides: a sweep over ``model`` becomes ``model=<first>`` plus the rest in ``models``."""
    plain, extra_models, models_override = [], [], None
    for override in parsed:
        key = override.key_or_group
        if override.is_sweep_override():
            if key != SWEEPABLE or override.is_delete() or override.is_add():
                raise ConfigError(
                    f"{override.input_line!r}: only the {SWEEPABLE} group can be swept ({SWEEPABLE}=a,b analyses "
                    f"both in one run, as the model grid); run once per value of {key}"
                )
            first, *rest = list(override.sweep_string_iterator())
            plain.append(f"{SWEEPABLE}={first}")
            extra_models.extend(rest)
        elif key == "models" and not override.is_delete():
            models_override = override
        else:
            plain.append(str(override.input_line))
    if extra_models:
        value = models_override.value() if models_override is not None else []
        listed = value if isinstance(value, list) else [value]
        merged = list(dict.fromkeys(extra_models + [str(m) for m in listed]))
        plain.append(f"models=[{','.join(merged)}]")
    elif models_override is not None:
        plain.append(str(models_override.input_line))
    return plain


def _yaml_value(value: Any) -> str:
    """A value as Snakemake's ``--config`` parser reads it back (YAML, flow style)."""
    if value is None:
        return "null"
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True)
    return text.removesuffix("\n...\n").strip()


def _mapping_of(dotted: str) -> str | None:
    """The user-replaceable mapping (``perturbation.families``) a dotted key lies in, if any."""
    return next((m for m in REPLACED_MAPPINGS if dotted == m or dotted.startswith(f"{m}.")), None)


def snakemake_config(config_dir: Path, overrides: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Translate Hydra overrides into Snakemake ``--config`` pairs; return them and the validated config.

    Dots become ``__``; ``+key`` and ``++key`` become plain keys (the Snakefile adds entries of
    ``perturbation.families`` and ``drift.label_sets`` itself); removing an entry of those mappings
    (``~perturbation.families.rotation``) passes the mapping whole. The config the Snakefile composes
    from the pairs is checked to equal the one Hydra composes from the overrides.
    """
    from snakemake.cli import parse_config  # Snakemake's own reading of --config pairs

    plain = _expand_model_sweep(parse_overrides(overrides))
    expected = compose_config(config_dir, plain, check_registries=False)
    parsed = parse_overrides(plain)
    whole: dict[str, None] = {}
    for override in parsed:
        if override.is_delete():
            mapping = _mapping_of(override.key_or_group)
            if mapping is None or mapping == override.key_or_group:
                raise ConfigError(
                    f"{override.input_line!r}: only entries of {list(REPLACED_MAPPINGS)} can be removed; set {override.key_or_group} instead"
                )
            whole[mapping] = None
        elif override.package:
            raise ConfigError(f"{override.input_line!r}: package overrides (@) are not supported")
    pairs = []
    for override in parsed:
        key = override.key_or_group
        if _mapping_of(key) in whole:
            continue
        pairs.append(f"{key.replace('.', KEY_SEPARATOR)}={_yaml_value(override.value())}")
    for mapping in whole:
        section, name = mapping.split(".")
        pairs.append(f"{mapping.replace('.', KEY_SEPARATOR)}={_yaml_value(expected[section][name])}")
    try:
        snakemake_view = overrides_from_mapping(parse_config(pairs))
    except ValueError as error:
        raise ConfigError(f"Snakemake cannot take these keys: {error}") from None
    cfg = compose_config(config_dir, snakemake_view)
    if cfg != expected:
        differ = sorted(k for k in set(cfg) | set(expected) if cfg.get(k) != expected.get(k))
        raise ConfigError(
            f"these overrides do not survive Snakemake's --config (keys {differ} differ): it reads values as YAML, "
            "so a quoted number or boolean turns back into one"
        )
    return pairs, cfg


def snakemake_command(pairs: Sequence[str], snakemake_args: Sequence[str]) -> list[str]:
    """The ``snakemake`` command line ``cliplens run`` executes."""
    args = list(snakemake_args)
    if "--config" in args or any(a.startswith("--config=") for a in args):
        raise ConfigError("give config overrides before '--', not as --config after it")
    command = [sys.executable, "-m", "snakemake", *args]
    snakefile_given = any(a in ("-s", "--snakefile") or a.startswith("--snakefile=") for a in args)
    if not snakefile_given and not (Path.cwd() / "Snakefile").is_file():
        command += ["-s", str(workflow_dir() / "Snakefile")]
    if not any(a.split("=")[0] in CORE_OPTIONS or a[:2] in ("-c", "-j") for a in args) and not os.environ.get(
        "SNAKEMAKE_PROFILE"
    ):
        command += ["--cores", "all"]
    return command + (["--config", *pairs] if pairs else [])


def _run(overrides: Sequence[str], snakemake_args: Sequence[str]) -> int:
    pairs, _ = snakemake_config(workflow_dir(snakemake_args) / "config", overrides)
    command = snakemake_command(pairs, snakemake_args)
    print("cliplens: " + shlex.join(["snakemake", *command[3:]]), file=sys.stderr, flush=True)
    process = subprocess.Popen(command)
    interrupted = False
    while True:
        try:
            code = process.wait()
        except KeyboardInterrupt:  # Ctrl-C reached snakemake too (same process group): it stops its jobs and cleans up
            if interrupted:  # again: pass it on, in case the signal was sent to cliplens alone
                process.send_signal(signal.SIGINT)
            interrupted = True
            print("cliplens: interrupted; snakemake is stopping its jobs", file=sys.stderr, flush=True)
            continue
        if interrupted:  # whatever the code: snakemake exits 1 after Ctrl-C, and a child reaped during the
            return INTERRUPTED  # interrupt reads as 0 to Popen
        return 128 - code if code < 0 else code  # killed by a signal: the shell's convention


class _PlainDumper(yaml.SafeDumper):
    """YAML without anchors: the model grid repeats the main model's settings in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _config(overrides: Sequence[str]) -> int:
    _, cfg = snakemake_config(workflow_dir() / "config", overrides)
    print(yaml.dump(cfg, Dumper=_PlainDumper, sort_keys=False, width=100), end="")
    return 0


def list_choices(what: str, config_dir: Path) -> list[str]:
    """One line per valid choice of ``models``, ``datasets``, ``families`` or ``methods`` (of ``explain.methods``)."""
    if what in ("models", "datasets"):
        group = what[:-1]
        default = _default_option(config_dir, group)
        return [
            f"{name + (' *' if name == default else ''):22s} {_describe(config_dir / group / f'{name}.yaml')}"
            for name in group_options(config_dir, group)
        ] + [f"(* the default {group})"]
    if what == "families":
        from cliplens.perturbation.families import FAMILIES

        return [
            f"{f.name:22s} {f.group:12s} " + "; ".join(f"{p}: {', '.join(map(str, v))}" for p, v in f.params.items())
            for f in FAMILIES.values()
        ]
    import cliplens.explain.methods  # noqa: F401  (registers the explain line's methods)
    from cliplens.maps import get_method

    schema = yaml.safe_load(schema_path(config_dir).read_text())
    valid = schema["properties"]["explain"]["properties"]["methods"]["items"]["enum"]  # what explain.methods accepts
    return [f"{name:22s} {' '.join((get_method(name).scores.__doc__ or '').split(chr(10) * 2)[0].split())}" for name in valid]


def _default_option(config_dir: Path, group: str) -> str | None:
    """The option of a config group that ``config.yaml``'s defaults list selects."""
    defaults = yaml.safe_load((config_dir / "config.yaml").read_text())["defaults"]
    return next((entry[group] for entry in defaults if isinstance(entry, dict) and group in entry), None)


def _first_sentence(text: str) -> str:
    """The first sentence of a config file's leading comment: up to a full stop, or a colon ending a line."""
    words: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        line = line.lstrip("# ").strip()
        if "@package" in line:
            continue
        if line.endswith(":"):
            return " ".join([*words, line[:-1]])
        stop = re.search(r"\.(\s|$)", line)
        if stop:
            return " ".join([*words, line[: stop.start() + 1]])
        words.append(line)
    return " ".join(words)


def _describe(path: Path) -> str:
    """A config file in one line: the settings it makes, then the first sentence of its leading comment."""
    text = path.read_text()
    data = yaml.safe_load(text) or {}
    settings = ", ".join(
        f"{k}={data[k]}" for k in ("arch", "pretrained", "source", "kind", "num_images") if data.get(k) is not None
    )
    return "; ".join(filter(None, [settings, _first_sentence(text)]))


LISTABLE = ("models", "datasets", "families", "methods")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cliplens`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    snakemake_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, snakemake_args = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="cliplens", description="Explain what CLIP models see: run, configure, explore.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the workflow: cliplens run [OVERRIDES...] [-- SNAKEMAKE ARGS...]")
    run.add_argument("overrides", nargs="*", help="Hydra overrides: key=value, a.b=v, +a.b=v, ~a.b, model=a,b")
    config = commands.add_parser("config", help="print the resolved config")
    config.add_argument("overrides", nargs="*")
    listing = commands.add_parser("list", help="the valid choices, one line each")
    listing.add_argument("what", choices=LISTABLE)
    explore = commands.add_parser("explore", help="the interactive explorer of stored results")
    explore.add_argument("results_dir", nargs="?", default="results")
    explore.add_argument("--port", type=int, default=None)
    explore.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    if snakemake_args and args.command != "run":
        parser.error("'-- SNAKEMAKE ARGS' belongs to 'cliplens run' only")
    try:
        if args.command == "run":
            return _run(args.overrides, snakemake_args)
        if args.command == "config":
            return _config(args.overrides)
        if args.command == "list":
            print("\n".join(list_choices(args.what, workflow_dir() / "config")))
            return 0
        try:
            from cliplens.explore import launch
        except ModuleNotFoundError as error:
            raise ConfigError(f"the explorer needs {error.name}: pip install -e '.[explore]'") from None
        launch(Path(args.results_dir), host=args.host, port=args.port)
        return 0
    except (ConfigError, FileNotFoundError) as error:
        print(f"cliplens: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before snakemake started, or in the explorer
        print("cliplens: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
