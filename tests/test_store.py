"""The Parquet embedding store: round trip, metadata, atomic writes, hive partitions."""

from __future__ import annotations

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from cliplens.io import IMAGE_FIELDS, EmbeddingWriter, embedding_schema, read_embeddings, read_provenance


def _rows(n):
    return {
        "image_id": [f"img{i}" for i in range(n)],
        "label_index": list(range(n)),
        "family": ["blur"] * n,
        "severity": [3] * n,
        "seed": [0] * n,
    }


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_with_provenance(tmp_path, dtype):
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((10, 8)).astype(np.float32)
    schema = embedding_schema(IMAGE_FIELDS, 8, dtype, {"model": "tiny", "random_weights": True})
    path = tmp_path / "model=tiny/dataset=d/perturbation=blur/shard=00000.parquet"
    with EmbeddingWriter(path, schema) as writer:
        writer.write({k: v[:4] for k, v in _rows(10).items()}, embeddings[:4])
        writer.write({k: v[4:] for k, v in _rows(10).items()}, embeddings[4:])
    rows, back = read_embeddings(path)
    tolerance = 2e-3 if dtype == "float16" else 0
    np.testing.assert_allclose(back, embeddings, atol=tolerance * 4, rtol=tolerance)
    assert back.dtype == np.float32
    assert rows["image_id"].tolist() == _rows(10)["image_id"]
    assert read_provenance(path) == {"model": "tiny", "random_weights": True}
    assert (
        str(pq.read_schema(path).field("embedding").type)
        == f"fixed_size_list<element: {'halffloat' if dtype == 'float16' else 'float'}>[8]"
    )


def test_hive_folders_become_filterable_columns(tmp_path):
    schema = embedding_schema(IMAGE_FIELDS, 4, "float32", {})
    for family in ("clean", "blur"):
        with EmbeddingWriter(tmp_path / f"model=m/perturbation={family}/shard=00000.parquet", schema) as writer:
            writer.write(_rows(3), np.ones((3, 4), np.float32))
    rows, embeddings = read_embeddings(tmp_path, filter=ds.field("perturbation") == "clean")
    assert len(rows) == 3 and set(rows["perturbation"]) == {"clean"} and embeddings.shape == (3, 4)


def test_interrupted_write_leaves_no_file(tmp_path):
    path = tmp_path / "out.parquet"
    schema = embedding_schema(IMAGE_FIELDS, 4, "float32", {})
    with pytest.raises(RuntimeError):
        with EmbeddingWriter(path, schema) as writer:
            writer.write(_rows(2), np.ones((2, 4), np.float32))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_wrong_embedding_width_is_refused(tmp_path):
    schema = embedding_schema(IMAGE_FIELDS, 4, "float32", {})
    with pytest.raises(ValueError, match="expected"):
        with EmbeddingWriter(tmp_path / "x.parquet", schema) as writer:
            writer.write(_rows(2), np.ones((2, 5), np.float32))


def test_a_rerun_removes_the_temporary_an_interrupted_writer_left(tmp_path):
    path = tmp_path / "shard=00000.parquet"
    stale = tmp_path / ".shard=00000.parquet.4242.tmp"  # a writer killed outright (SIGKILL) leaves this
    stale.write_bytes(b"partial")
    schema = embedding_schema(IMAGE_FIELDS, 4, "float32", {})
    with EmbeddingWriter(path, schema) as writer:
        writer.write(_rows(2), np.ones((2, 4)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
