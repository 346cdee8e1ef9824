"""The one place files are written: atomic outputs, the Parquet embedding store, arrays and JSON.

Every output is written to a temporary name beside its target and renamed when complete, so an
interrupted job never leaves a half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (0o666 minus the umask).

    Linux reports the umask in /proc; elsewhere it is read by setting and restoring it.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def remove_leftovers(path: Path) -> None:
    """Remove temporary files an interrupted writer of ``path`` left beside it (``.<name>.*.tmp``).

    Snakemake never runs two jobs writing the same output at once, so any such file is stale.
    """
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block completes.

    The file gets the mode a plain ``open()`` would give it (mkstemp alone makes it owner-only),
    and temporaries an interrupted earlier attempt left behind are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(handle, default_file_mode())
    os.close(handle)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


METADATA_KEY = b"cliplens"


DTYPES = {"float16": (pa.float16(), np.float16), "float32": (pa.float32(), np.float32)}


IMAGE_FIELDS = [
    pa.field("image_id", pa.string()),
    pa.field("label_index", pa.int64()),
    pa.field("family", pa.string()),
    pa.field("severity", pa.int16()),
    pa.field("seed", pa.int64()),
]


TEXT_FIELDS = [pa.field("label_index", pa.int64()), pa.field("label", pa.string())]


def embedding_schema(fields: list[pa.Field], dim: int, dtype: str, metadata: Mapping[str, Any]) -> pa.Schema:
    """Schema of ``fields`` plus ``embedding: fixed_size_list<dtype, dim>``, provenance as JSON metadata."""
    value_type = DTYPES[dtype][0]
    schema = pa.schema([*fields, pa.field("embedding", pa.list_(value_type, dim))])
    return schema.with_metadata({METADATA_KEY: json.dumps(dict(metadata), sort_keys=True, default=str).encode()})


class EmbeddingWriter:
    """Stream batches of rows + embeddings into one Parquet file, atomically.

    Use as a context manager: the file appears under its final name only when the block
    completes; on an exception (or interruption) the partial file is removed.
    """

    def __init__(self, path: str | os.PathLike, schema: pa.Schema):
        self.path = Path(path)
        self.schema = schema
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._writer: pq.ParquetWriter | None = None
        self.rows_written = 0

    def __enter__(self) -> EmbeddingWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.path)
        self._writer = pq.ParquetWriter(self._tmp, self.schema, use_dictionary=False, compression="zstd")
        return self

    def write(self, columns: Mapping[str, Iterable[Any]], embeddings: np.ndarray) -> None:
        """Append rows: ``columns`` holds every non-embedding field; ``embeddings`` is [rows, dim]."""
        value_type = self.schema.field("embedding").type
        dim = value_type.list_size
        values = np.ascontiguousarray(embeddings, dtype=DTYPES[str_dtype(value_type.value_type)][1])
        if values.ndim != 2 or values.shape[1] != dim:
            raise ValueError(f"embeddings of shape {values.shape}; expected [rows, {dim}]")
        arrays = [pa.array(columns[f.name], type=f.type) for f in self.schema if f.name != "embedding"]
        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), dim))
        assert self._writer is not None, "use EmbeddingWriter as a context manager"
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.rows_written += len(values)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        assert self._writer is not None
        self._writer.close()
        if kind is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def str_dtype(arrow_type: pa.DataType) -> str:
    """'float16' or 'float32' for an Arrow float type."""
    return {pa.float16(): "float16", pa.float32(): "float32"}[arrow_type]


def table_embeddings(table: pa.Table) -> np.ndarray:
    """The embedding column of a table as a float32 [rows, dim] array."""
    column = table.column("embedding")
    dim = column.type.list_size
    if table.num_rows == 0:
        return np.empty((0, dim), dtype=np.float32)
    return column.combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)


def read_embeddings(
    source: str | os.PathLike | list[str | os.PathLike], filter: ds.Expression | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Read one file, a list of files or a hive-partitioned folder: (rows without embedding, float32 array)."""
    paths = [str(p) for p in source] if isinstance(source, list) else str(source)
    dataset = ds.dataset(paths, format="parquet", partitioning="hive")
    table = dataset.to_table(filter=filter)
    return table.drop(["embedding"]).to_pandas(), table_embeddings(table)


def read_pool_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Texts and embeddings [M, D] of a text-pool file (``cliplens.text.write_pool_embeddings``), in pool order."""
    rows, embeddings = read_embeddings(path)
    order = np.argsort(rows["text_index"].to_numpy())
    return rows["text"].to_numpy()[order].tolist(), embeddings[order]


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance record stored in a file's schema metadata."""
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(METADATA_KEY, b"{}"))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table atomically: Parquet for ``.parquet``, CSV (without the index) otherwise."""
    with atomic_output(path) as tmp:
        if Path(path).suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
