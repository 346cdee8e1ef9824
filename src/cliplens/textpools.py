"""Text pools for TEXTSPAN and the property descriptions used to label heads.

Pools: ``builtin`` (short image descriptions shipped with cliplens), the two pools of the
TEXTSPAN paper read from a local directory and checked against pinned SHA-256 sums
(``textspan_general``: 3,498 general image descriptions; ``textspan_words``: 3,498 common
English words), or any text file with one text per line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from cliplens.download import sha256_of

DATA_DIR = Path(__file__).parent / "data"
BUILTIN_POOL = DATA_DIR / "builtin_text_pool.txt"
PROPERTIES_FILE = DATA_DIR / "properties.txt"
TEXTSPAN_DIR_ENV = "CLIPLENS_TEXTSPAN_DIR"
TEXTSPAN_UPSTREAM = "https://github.com/yossigandelsman/clip_text_span (folder text_descriptions, commit 49f70f31)"


class PoolFile(NamedTuple):
    """A pool file of the TEXTSPAN repository: local name, pinned SHA-256, raw download URL."""

    filename: str
    sha256: str
    url: str


_RAW = "https://raw.githubusercontent.com/yossigandelsman/clip_text_span/main/text_descriptions/"
TEXTSPAN_POOLS: dict[str, PoolFile] = {
    "textspan_general": PoolFile(
        "image_descriptions_general.txt",
        "39c6bf3e788684d9e0e8afa902c13aae1ee8eafefdbab94ba923fd05b9038630",
        _RAW + "image_descriptions_general.txt",
    ),
    "textspan_words": PoolFile(
        "google_3498_english.txt",
        "d9502487f471d07e44b8ae79e01fd03527ab032be2c7d721c1346f97efdaf2c5",
        _RAW + "google_3498_english.txt",
    ),
}
POOL_NAMES = ("builtin", *TEXTSPAN_POOLS)


class PoolUnavailableError(FileNotFoundError):
    """A named pool is missing locally or fails its checksum."""


def read_lines(path: str | os.PathLike) -> list[str]:
    """Non-empty lines of a UTF-8 text file, stripped, in file order."""
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def textspan_pool_path(name: str, pool_dir: str | os.PathLike | None = None) -> Path:
    """Verified local path of a TEXTSPAN paper pool (``pool_dir`` or $CLIPLENS_TEXTSPAN_DIR)."""
    entry = TEXTSPAN_POOLS[name]
    directory = pool_dir or os.environ.get(TEXTSPAN_DIR_ENV)
    how_to_get = (
        f"download {entry.url} (from {TEXTSPAN_UPSTREAM}) into a directory and pass it as pool_dir or set ${TEXTSPAN_DIR_ENV}"
    )
    if directory is None:
        raise PoolUnavailableError(f"pool {name!r} needs its directory: {how_to_get}")
    path = Path(directory).expanduser() / entry.filename
    if not path.is_file():
        raise PoolUnavailableError(f"pool {name!r}: {path} does not exist; {how_to_get}")
    digest = sha256_of(path)
    if digest != entry.sha256:
        raise PoolUnavailableError(f"pool {name!r}: {path} has SHA-256 {digest}, expected {entry.sha256}; {how_to_get}")
    return path


def load_pool(name_or_path: str | os.PathLike, pool_dir: str | os.PathLike | None = None) -> list[str]:
    """Texts of a pool: ``builtin``, ``textspan_general``, ``textspan_words`` or a file path."""
    if name_or_path == "builtin":
        return read_lines(BUILTIN_POOL)
    if name_or_path in TEXTSPAN_POOLS:
        return read_lines(textspan_pool_path(str(name_or_path), pool_dir))
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise PoolUnavailableError(f"text pool {name_or_path!r} is neither a file nor one of {POOL_NAMES}")
    return read_lines(path)


def load_properties(path: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Property name -> descriptions, from ``property: description`` lines (default: built-in)."""
    properties: dict[str, list[str]] = {}
    for line in read_lines(path or PROPERTIES_FILE):
        if line.startswith("#"):
            continue
        name, separator, description = line.partition(":")
        if not separator or not name.strip() or not description.strip():
            raise ValueError(f"{path or PROPERTIES_FILE}: line {line!r} is not 'property: description'")
        properties.setdefault(name.strip(), []).append(description.strip())
    return properties
