"""Downloads that are checksum-verified and archives that extract without path traversal."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.request
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)


class ChecksumError(RuntimeError):
    """A downloaded file does not have the pinned SHA-256."""


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: Path, sha256: str | None) -> str:
    """Download ``url`` to ``target`` atomically and verify it; returns the file's SHA-256.

    With ``sha256=None`` (a source not pinned yet) the hash is logged so it can be pinned.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as handle:
        shutil.copyfileobj(response, handle)
    actual = sha256_of(partial)
    if sha256 is not None and actual != sha256:
        partial.unlink()
        raise ChecksumError(f"{url}: sha256 {actual} does not match the pinned {sha256}")
    if sha256 is None:
        log.warning("%s is not pinned; its sha256 is %s (pin it in the dataset config)", url, actual)
    os.replace(partial, target)
    return actual


def safe_extract_zip(archive: Path, destination: Path) -> list[Path]:
    """Extract a zip archive, refusing members that would land outside ``destination``.

    Absolute names, ``..`` components and symbolic links are rejected before anything is written.
    """
    destination = destination.resolve()
    with zipfile.ZipFile(archive) as handle:
        members = handle.infolist()
        for member in members:
            target = (destination / member.filename).resolve()
            is_link = (member.external_attr >> 16) & 0o170000 == 0o120000
            if is_link or not target.is_relative_to(destination):
                raise ValueError(f"{archive}: unsafe member {member.filename!r} (outside the destination or a link)")
        handle.extractall(destination)
    return [destination / m.filename for m in members if not m.is_dir()]
