"""Where a model's weights come from, checked before any job runs: pretrained open_clip weights
(found in the cache or downloaded), a local checkpoint, or none (random and planted models).

Cheap to import: the workflow's start checks every model with :func:`ensure_weights`, and only
pretrained weights need open_clip.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights can neither be found locally nor downloaded."""


def weights_hint(cfg: Mapping[str, Any]) -> str:
    """The ways out when pretrained weights are missing."""
    return (
        f"Pretrained weights for {cfg.get('arch')} ({cfg.get('pretrained')}) are not available on this "
        "machine and cannot be downloaded. Ways out: (1) point to a local checkpoint with "
        "`--config model=checkpoint model__arch=<ARCH> model__checkpoint=/path/to/weights.pt`; "
        "(2) fill the Hugging Face cache on a machine with internet and run with HF_HUB_OFFLINE=1 "
        "(model__cache_dir selects another cache); (3) `--config model=tiny_random` for a smoke run "
        "with random weights."
    )


@functools.cache
def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hugging Face Hub (``HF_ENDPOINT``) cannot be reached from here, or None when it can
    (or it is not asked: ``HF_HUB_OFFLINE=1``, or a proxy, which this check cannot see through).
    Asked once per process: the workflow's start checks every model of the grid."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None
    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    host, port = endpoint.hostname or "", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return f"{host}:{port} cannot be reached ({error})"
    return None


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face Hub in offline mode meanwhile, as ``HF_HUB_OFFLINE=1`` would set it: the cache is
    read and no request is retried against a host that does not answer."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def ensure_weights(cfg: Mapping[str, Any]) -> str | None:
    """Return the local path of a model's pretrained weights, downloading them if possible.

    Raises :class:`WeightsUnavailableError` naming the ways out when they cannot be had.
    Only the ``open_clip`` source downloads; checkpoints must exist; random models need none.
    When the Hub cannot be reached, only the cache is read (at once, instead of after retries).
    """
    source = cfg["source"]
    if source == "random":
        return None
    if source == "planted":  # written by the workflow before any job loads it
        return None
    if source == "checkpoint":
        path = Path(cfg["checkpoint"]).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"model.checkpoint {path} does not exist")
        return str(path)
    import open_clip  # only here: a workflow of random, planted or checkpoint models never imports it to start

    pretrained_cfg = open_clip.get_pretrained_cfg(cfg["arch"], cfg["pretrained"])
    if not pretrained_cfg:
        tags = open_clip.list_pretrained_tags_by_model(cfg["arch"])
        raise WeightsUnavailableError(
            f"model.pretrained={cfg['pretrained']!r} is no open_clip tag of {cfg['arch']}; valid: {tags}"
        )
    unreachable = hub_unreachable()
    try:
        with hub_offline() if unreachable else contextlib.nullcontext():  # no minute of retries: the cache only
            return open_clip.pretrained.download_pretrained(pretrained_cfg, cache_dir=cfg.get("cache_dir"))
    except Exception as error:  # network errors come in many types
        cause = f"{unreachable}, and the weights are not in the cache ({error})" if unreachable else str(error)
        raise WeightsUnavailableError(f"{weights_hint(cfg)}\nCause: {cause}") from error
