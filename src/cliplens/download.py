"""Downloads that are verified before use, and archives that extract without path traversal.

Every archive is checked against a SHA-256: the one pinned in the dataset config where the upstream
publishes one, otherwise the one recorded in a lock file beside the data when the archive was first
downloaded (trust on first use, logged as unverified). A download whose length differs from the
declared Content-Length, whose hash does not match, or that fails midway is an error and leaves
no file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cliplens.io import atomic_output

log = logging.getLogger(__name__)

LOCK_FILE = "downloads.lock.json"
"""Name of the trust-on-first-use record beside a dataset's data: url -> sha256, size."""


class ChecksumError(RuntimeError):
    """A file does not have the SHA-256 it was pinned to (in the config or the lock file)."""


class IncompleteDownloadError(RuntimeError):
    """A download ended before the length the server declared."""


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _partial(target: Path) -> Iterator[Path]:
    """``target.part``, removed unless the block moved it into place (also on errors and interrupts)."""
    partial = target.with_name(target.name + ".part")
    try:
        yield partial
    finally:
        partial.unlink(missing_ok=True)


def _fetch(url: str, partial: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """Stream ``url`` into ``partial``; return (sha256, size). The length must match Content-Length."""
    digest, size, declared = hashlib.sha256(), 0, None
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as handle:
            declared = response.headers.get("Content-Length")
            while block := response.read(chunk):
                digest.update(block)
                handle.write(block)
                size += len(block)
    except (OSError, http.client.HTTPException) as error:
        raise IncompleteDownloadError(
            f"{url}: the download failed after {size} bytes ({type(error).__name__}: {error}); nothing was kept, run again to retry"
        ) from error
    if declared is not None and size != int(declared):
        raise IncompleteDownloadError(
            f"{url}: received {size} bytes, the server declared {declared}; nothing was kept, run again to retry"
        )
    return digest.hexdigest(), size


def download(url: str, target: Path, sha256: str | None, lock: ArchiveLock | None = None) -> str:
    """Download ``url`` to ``target`` atomically and verify it; returns the file's SHA-256.

    The expected hash is ``sha256`` (pinned) or else the one ``lock`` recorded for this url; with
    neither, the download is trusted on first use and recorded in ``lock``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with _partial(target) as partial:
        actual, size = _fetch(url, partial)
        expected = sha256 or (lock.sha256(url) if lock else None)
        if expected is not None and actual != expected:
            source = "pinned in the dataset config" if sha256 else f"recorded in {lock.path if lock else ''}"
            raise ChecksumError(
                f"{url}: sha256 {actual} does not match the {expected} {source}; nothing was kept. "
                "If the upstream file changed on purpose, delete the lock entry (or update the pin) and run again"
            )
        if expected is None:
            log.warning(
                "%s: no published sha256 to verify against (UNVERIFIED); recorded sha256 %s, %d bytes%s",
                url,
                actual,
                size,
                f" in {lock.path}; later downloads and extractions are checked against it" if lock else "",
            )
            if lock:
                lock.record(url, actual, size)
        os.replace(partial, target)
    return actual


class ArchiveLock:
    """The trust-on-first-use record of a dataset's archives: a JSON file url -> {sha256, size}."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}

    def sha256(self, url: str) -> str | None:
        """The recorded hash of ``url`` (None before its first download)."""
        entry = self.entries.get(url)
        return entry["sha256"] if entry else None

    def record(self, url: str, sha256: str, size: int) -> None:
        """Record the hash and size of the first download of ``url``."""
        self.entries[url] = {"sha256": sha256, "size": size}
        with atomic_output(self.path) as tmp:
            tmp.write_text(json.dumps(self.entries, indent=2, sort_keys=True) + "\n")


def verify_archive(path: Path, url: str, sha256: str | None, lock: ArchiveLock) -> None:
    """Check an archive already on disk against its pinned or recorded hash before it is used."""
    expected = sha256 or lock.sha256(url)
    if expected is None:
        raise ChecksumError(
            f"{path} has no pinned or recorded sha256 to be checked against; "
            f"delete it so that it is downloaded again (and recorded in {lock.path})"
        )
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(f"{path}: sha256 {actual} does not match the expected {expected}; delete it and run again")


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
