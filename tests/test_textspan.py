"""TEXTSPAN on synthetic heads with known text directions, and the text pools."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cliplens.interpret.contributions import Contributions
from cliplens.interpret.textspan import textspan, textspan_heads
from cliplens.textpools import TEXTSPAN_POOLS, PoolUnavailableError, load_pool, load_properties

SHARED_POOLS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "textspan-descriptions"
SCALES = np.array([4.0, 3.0, 2.0, 1.0])


def synthetic_head(seed: int = 0, images: int = 400, dim: int = 16, distractors: int = 30):
    """C = mean + sum_i s_i z_i u_i with orthonormal u_i, uncorrelated unit-variance z_i, s = 4, 3, 2, 1.

    The pool holds the u_i (at shuffled positions) among random unit distractors. Returns
    (C, T, positions of u_1..u_4 in T).
    """
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.normal(size=(dim, len(SCALES))))[0].T  # [4, D] orthonormal
    latent = rng.normal(size=(images, len(SCALES)))
    latent = np.linalg.qr(latent - latent.mean(0))[0] * np.sqrt(images)  # centred, exactly uncorrelated
    data = (latent * SCALES) @ directions + rng.normal(size=dim)
    noise = rng.normal(size=(distractors, dim))
    pool = np.concatenate([directions, noise / np.linalg.norm(noise, axis=1, keepdims=True)])
    order = rng.permutation(len(pool))
    return data, pool[order], np.argsort(order)[: len(SCALES)]


@pytest.mark.parametrize("criterion", ["reference", "normalised"])
@pytest.mark.parametrize("rank", [80, 5])  # C is uncentred: its top 5 span the mean and u_1..u_4
def test_recovers_known_directions_in_order(rank, criterion):
    data, pool, positions = synthetic_head()
    indices, explained = textspan(data, pool, m=4, r=rank, criterion=criterion)
    np.testing.assert_array_equal(indices, positions)
    np.testing.assert_allclose(explained, SCALES**2 / (SCALES**2).sum(), atol=1e-10)


def test_deterministic_and_permutation_equivariant():
    data, pool, _ = synthetic_head(seed=3)
    first = textspan(data, pool, m=8, r=10)
    second = textspan(data.copy(), pool.copy(), m=8, r=10)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    order = np.random.default_rng(0).permutation(len(pool))
    permuted_indices, permuted_explained = textspan(data, pool[order], m=8, r=10)
    np.testing.assert_array_equal(order[permuted_indices], first[0])
    np.testing.assert_allclose(permuted_explained, first[1], rtol=1e-10)


@pytest.mark.parametrize("criterion", ["reference", "normalised"])
def test_variance_explained_sums_to_at_most_one(criterion):
    data, pool, _ = synthetic_head(seed=5)
    indices, explained = textspan(data, pool, m=40, r=80, criterion=criterion)
    assert len(set(indices.tolist())) == len(indices)  # a removed text is never picked again
    assert len(indices) <= 16  # the span of 16 dims is exhausted after 16 picks
    assert np.all(explained >= -1e-12) and explained.sum() <= 1 + 1e-9
    np.testing.assert_allclose(explained.sum(), 1.0, atol=1e-8)  # the pool spans all of R^16


def test_criteria_differ_on_a_short_text_along_the_strongest_direction():
    """Shorten the text along u_1 to length 0.4: u_1 still carries the most variance along its unit
    direction (16 per image), so the normalised criterion keeps the order u_1, u_2, but |C t|^2
    per image is 0.16 * 16 = 2.56 for it against 9 (u_2) and 4 (u_3), so the reference criterion
    picks u_2, then u_3. The variance explained is measured along the unit direction under both."""
    data, pool, positions = synthetic_head()
    short = pool.copy()
    short[positions[0]] *= 0.4
    shares = SCALES**2 / (SCALES**2).sum()
    normalised = textspan(data, short, m=2, r=80, criterion="normalised")
    reference = textspan(data, short, m=2, r=80, criterion="reference")
    np.testing.assert_array_equal(normalised[0], positions[:2])
    np.testing.assert_allclose(normalised[1], shares[:2], atol=1e-10)
    np.testing.assert_array_equal(reference[0], positions[1:3])
    np.testing.assert_allclose(reference[1], shares[1:3], atol=1e-10)
    with pytest.raises(ValueError, match="criterion"):
        textspan(data, short, criterion="unit")


def test_textspan_heads_table():
    data, pool, positions = synthetic_head()
    images = len(data)
    heads = np.zeros((images, 1, 2, data.shape[1]), np.float32)
    heads[:, 0, 0] = data
    strongest = pool[positions[0]]
    heads[:, 0, 1] = data - np.outer(data @ strongest, strongest)  # head 1 lacks u_1: its texts are u_2, u_3
    zeros = np.zeros((images, 4, data.shape[1]), np.float32)
    store = Contributions(
        ids=np.arange(images).astype(str),
        embed=zeros[:, 0],
        mlps=zeros,
        attns=zeros,
        heads=heads,
        embedding=zeros[:, 0],
        head_layers=(3,),
    )
    texts = [f"text {i}" for i in range(len(pool))]
    table = textspan_heads(store, pool, texts, m=2, r=80)
    assert list(table.columns) == ["layer", "head", "rank", "text_index", "text", "variance_explained"]
    assert len(table) == 4 and set(table["layer"]) == {3}
    for head, expected in ((0, positions[:2]), (1, positions[1:3])):
        rows = table[table["head"] == head].sort_values("rank")
        assert rows["rank"].tolist() == [0, 1]
        np.testing.assert_array_equal(rows["text_index"].to_numpy(), expected)
        assert rows["text"].tolist() == [f"text {i}" for i in expected]
        _, explained = textspan(heads[:, 0, head], pool, m=2, r=80)
        np.testing.assert_allclose(rows["variance_explained"].to_numpy(), explained, rtol=1e-6)
    shares = SCALES**2 / (SCALES**2).sum()
    np.testing.assert_allclose(table.query("head == 0")["variance_explained"], shares[:2], atol=1e-5)


def test_builtin_pool_and_properties():
    pool = load_pool("builtin")
    assert 300 <= len(pool) <= 1000 and len(set(pool)) == len(pool)
    properties = load_properties()
    assert {"colour", "texture", "shape", "location", "counting", "animals", "people", "style", "emotion", "text"} <= set(
        properties
    )
    assert all(len(descriptions) >= 3 for descriptions in properties.values())


def test_user_pool_file(tmp_path):
    path = tmp_path / "pool.txt"
    path.write_text("a red car\n\n  a dog  \n")
    assert load_pool(path) == ["a red car", "a dog"]
    with pytest.raises(PoolUnavailableError):
        load_pool(tmp_path / "missing.txt")


@pytest.mark.skipif(not SHARED_POOLS.is_dir(), reason="shared TEXTSPAN pools not present")
def test_paper_pools_verified(tmp_path, monkeypatch):
    general = load_pool("textspan_general", pool_dir=SHARED_POOLS)
    words = load_pool("textspan_words", pool_dir=SHARED_POOLS)
    assert len(general) == 3498 and len(words) == 3498
    assert words[:3] == ["the", "of", "and"]
    sums = dict(line.split()[::-1] for line in (SHARED_POOLS / "SHA256SUMS").read_text().splitlines())
    assert {entry.filename: entry.sha256 for entry in TEXTSPAN_POOLS.values()} == sums
    monkeypatch.setenv("CLIPLENS_TEXTSPAN_DIR", str(SHARED_POOLS))
    assert load_pool("textspan_words") == words
    tampered = tmp_path / "pools"
    tampered.mkdir()
    shutil.copy(SHARED_POOLS / "google_3498_english.txt", tampered)
    with open(tampered / "google_3498_english.txt", "a") as handle:
        handle.write("extra\n")
    with pytest.raises(PoolUnavailableError, match="SHA-256"):
        load_pool("textspan_words", pool_dir=tampered)


def test_paper_pool_needs_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("CLIPLENS_TEXTSPAN_DIR", raising=False)
    with pytest.raises(PoolUnavailableError, match="raw.githubusercontent.com"):
        load_pool("textspan_general")
    with pytest.raises(PoolUnavailableError, match="does not exist"):
        load_pool("textspan_general", pool_dir=tmp_path)
