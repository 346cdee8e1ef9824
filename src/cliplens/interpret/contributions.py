"""Streaming storage of a dataset's decomposition: sharded ``.npy`` arrays with a Parquet index."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from numpy.typing import DTypeLike

from cliplens.io import _save_npy, atomic_output, write_table

if TYPE_CHECKING:
    from cliplens.interpret.decompose import ConstantSplit, Decomposition
    from cliplens.models import LoadedModel

# The store is read by jobs that run no model (TEXTSPAN, mean ablation): the model side of this
# module (decomposing, loading images) imports open_clip's and torchvision's code inside its two
# functions, so that those jobs start without them.

STORE_FORMAT = "cliplens-head-contributions/1"


@dataclass
class Contributions:
    """Stored contributions of M images as numpy arrays (rows in dataset order).

    ``embed [M, D]``, ``mlps [M, L, D]``, ``attns [M, L, D]`` (per-layer sum over heads),
    ``heads [M, n, H, D]`` for the layers ``head_layers``, ``embedding [M, D]``; ``ids [M]``.
    """

    ids: np.ndarray
    embed: np.ndarray
    mlps: np.ndarray
    attns: np.ndarray
    heads: np.ndarray
    embedding: np.ndarray
    head_layers: tuple[int, ...]

    @classmethod
    def from_decomposition(
        cls, ids: Sequence[str], result: Decomposition, layers: int | None, dtype: DTypeLike = np.float32
    ) -> Contributions:
        """Keep the heads of the last ``layers`` layers (None: all) of a batch's decomposition."""
        num_layers = result.heads.shape[1]
        head_layers = tuple(range(num_layers - min(layers or num_layers, num_layers), num_layers))

        def as_numpy(tensor: torch.Tensor) -> np.ndarray:
            return tensor.detach().cpu().numpy().astype(dtype)

        return cls(
            ids=np.asarray(ids, dtype=object),
            embed=as_numpy(result.embed),
            mlps=as_numpy(result.mlps),
            attns=as_numpy(result.attns),
            heads=as_numpy(result.heads[:, list(head_layers)]),
            embedding=as_numpy(result.embedding),
            head_layers=head_layers,
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Contributions]) -> Contributions:
        """Rows of several parts one after the other (same layout)."""
        arrays = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls) if f.name != "head_layers"}
        return cls(**arrays, head_layers=parts[0].head_layers)

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, rows: int = 4096) -> Iterator[Contributions]:
        """Consecutive row blocks of at most ``rows`` rows."""
        for start in range(0, len(self), rows):
            yield self.slice(start, start + rows)

    def slice(self, start: int, stop: int) -> Contributions:
        """Rows start:stop."""
        arrays = {f.name: getattr(self, f.name)[start:stop] for f in fields(self) if f.name != "head_layers"}
        return Contributions(**arrays, head_layers=self.head_layers)

    def total(self) -> np.ndarray:
        """Sum of all terms [M, D] in float32 (the normalised embedding, up to storage rounding)."""
        return self.embed.astype(np.float32) + self.mlps.sum(1, dtype=np.float32) + self.attns.sum(1, dtype=np.float32)

    @property
    def num_layers(self) -> int:
        return self.mlps.shape[1]

    @property
    def num_heads(self) -> int:
        return self.heads.shape[2]

    def head_index(self, layer: int) -> int:
        """Position of layer ``layer`` (negative counts from the end) in ``heads``."""
        return _head_position(self.head_layers, layer, self.num_layers)

    def head_matrix(self, layer: int, head: int) -> np.ndarray:
        """Contributions of one head over all rows, float32 [M, D]."""
        return np.asarray(self.heads[:, self.head_index(layer), head], dtype=np.float32)


def _head_position(head_layers: tuple[int, ...], layer: int, num_layers: int) -> int:
    absolute = layer % num_layers
    if absolute not in head_layers:
        raise KeyError(f"heads of layer {layer} not stored; stored layers: {head_layers}")
    return head_layers.index(absolute)


ARRAY_FIELDS = ("embed", "mlps", "attns", "heads", "embedding")


def write_head_contributions(
    batches: Iterable[tuple[Sequence[str], torch.Tensor]],
    model: torch.nn.Module | LoadedModel,
    out_dir: str | os.PathLike,
    layers: int | None = 4,
    dtype: Literal["float16", "float32"] = "float16",
    rows_per_shard: int = 4096,
    constant_split: ConstantSplit = "reference",
) -> ContributionStore:
    """Decompose every batch of (ids, normalised images) and write the terms to ``out_dir``.

    Per shard k: ``{field}-{k:05d}.npy`` for each array field of :class:`Contributions` (heads
    of the last ``layers`` layers, None = all); at the end ``index.parquet`` (id, shard, row)
    and ``meta.json`` (which records ``constant_split``, see :func:`decompose`). Memory is
    bounded by ``rows_per_shard`` plus one batch, not by the number of images.
    """
    from cliplens.interpret.decompose import decompose

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pending: list[Contributions] = []
    index_parts: list[pd.DataFrame] = []
    shard = 0
    meta: dict = {}

    def flush() -> None:
        nonlocal shard
        block = Contributions.concatenate(pending)
        for name in ARRAY_FIELDS:
            _save_npy(out / f"{name}-{shard:05d}.npy", getattr(block, name))
        index_parts.append(pd.DataFrame({"id": block.ids.astype(str), "shard": shard, "row": np.arange(len(block))}))
        pending.clear()
        shard += 1

    for ids, images in batches:
        result = decompose(model, images, constant_split=constant_split)
        part = Contributions.from_decomposition(ids, result, layers, dtype)
        meta = {
            "format": STORE_FORMAT,
            "dtype": dtype,
            "num_layers": int(result.mlps.shape[1]),
            "num_heads": int(result.heads.shape[2]),
            "dim": int(result.embed.shape[1]),
            "head_layers": list(part.head_layers),
            "grid_size": list(result.grid_size),
            "constant_split": constant_split,
        }
        pending.append(part)
        if sum(len(p) for p in pending) >= rows_per_shard:
            flush()
    if pending:
        flush()
    if not index_parts:
        raise ValueError("no batches to decompose")
    index = pd.concat(index_parts, ignore_index=True)
    if index["id"].duplicated().any():
        raise ValueError("image ids must be unique")
    meta.update(num_images=len(index), num_shards=shard)
    with atomic_output(out / "meta.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    write_table(index, out / "index.parquet")
    return ContributionStore(out)


class ContributionStore:
    """Read access to a directory written by :func:`write_head_contributions` (memory-mapped)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.meta = json.loads((self.root / "meta.json").read_text())
        if self.meta.get("format") != STORE_FORMAT:
            raise ValueError(f"{self.root} is not a {STORE_FORMAT} store")
        self.index = pd.read_parquet(self.root / "index.parquet")
        self.head_layers = tuple(self.meta["head_layers"])

    def __len__(self) -> int:
        return len(self.index)

    @property
    def num_layers(self) -> int:
        return self.meta["num_layers"]

    @property
    def num_heads(self) -> int:
        return self.meta["num_heads"]

    @property
    def ids(self) -> np.ndarray:
        """Image ids in store order [M]."""
        return self.index["id"].to_numpy()

    def _array(self, name: str, shard: int) -> np.ndarray:
        return np.load(self.root / f"{name}-{shard:05d}.npy", mmap_mode="r")

    def chunks(self) -> Iterator[Contributions]:
        """One :class:`Contributions` per shard, in store order (float arrays memory-mapped)."""
        for shard, rows in self.index.groupby("shard", sort=True):
            arrays = {name: self._array(name, shard) for name in ARRAY_FIELDS}
            yield Contributions(ids=rows["id"].to_numpy(), head_layers=self.head_layers, **arrays)

    def load(self) -> Contributions:
        """All rows in memory."""
        return Contributions.concatenate(list(self.chunks()))

    def head_matrix(self, layer: int, head: int) -> np.ndarray:
        """Contributions of one head over all images, float32 [M, D] (reads only that slice)."""
        position = _head_position(self.head_layers, layer, self.num_layers)
        shards = range(self.meta["num_shards"])
        return np.concatenate([self._array("heads", s)[:, position, head] for s in shards]).astype(np.float32)


def decompose_dataset(
    loaded: LoadedModel,
    manifest: pd.DataFrame,
    out_dir: str | os.PathLike,
    max_images: int,
    head_layers: int | None,
    dtype: Literal["float16", "float32"],
    batch_size: int = 32,
    num_workers: int = 0,
    constant_split: ConstantSplit = "reference",
) -> ContributionStore:
    """Decompose the first ``max_images`` readable images (the model's own preprocessing) into a store.

    ``head_layers``: heads of the last n layers are stored (None: every layer's);
    ``constant_split``: see :func:`decompose`.
    """
    from torchvision.transforms.v2 import functional as TF

    from cliplens.images import iterate_batches, pixel_transform

    rows = manifest.head(max_images)
    batches = (
        (batch["image_id"].tolist(), TF.normalize(pixels, loaded.mean, loaded.std))
        for batch, pixels, _ in iterate_batches(
            rows, pixel_transform(loaded), loaded.image_size, batch_size, num_workers, loaded.device
        )
    )
    return write_head_contributions(batches, loaded, out_dir, layers=head_layers, dtype=dtype, constant_split=constant_split)


def select_rows(contributions: Contributions, keep: np.ndarray) -> Contributions:
    """The rows of ``contributions`` where ``keep`` is true."""
    arrays = {name: np.asarray(getattr(contributions, name))[keep] for name in ARRAY_FIELDS}
    return dataclasses.replace(contributions, ids=contributions.ids[keep], **arrays)


def store_labels(store: ContributionStore, manifest: pd.DataFrame) -> np.ndarray:
    """Class index of every stored image, in store order (-1: unlabelled)."""
    return manifest.set_index("image_id").loc[store.ids, "label_index"].to_numpy()
