"""Dataset preparation: manifests, labels, masks, rejects, verified downloads and safe extraction."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest
from conftest import shared_dataset
from PIL import Image

from cliplens.datasets import prepare, read_manifest, shard_rows, write_manifest
from cliplens.download import ChecksumError, download, safe_extract_zip, sha256_of


def _folder_cfg(path, labels_csv=None):
    return {"kind": "folder", "path": str(path), "labels_csv": labels_csv, "mirror": None, "archives": []}


def test_skimage_samples_are_real_labelled_photos(tmp_path):
    manifest, rejects = prepare({"kind": "skimage"}, tmp_path)
    assert len(manifest) == 12 and rejects.empty
    assert manifest.set_index("label").loc["cat", "width"] == 451
    assert (manifest["label_index"] >= 0).all()
    assert manifest.attrs["label_names"][manifest.iloc[1]["label_index"]] == manifest.iloc[1]["label"]


def test_corrupt_and_truncated_files_are_rejected_not_fatal(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(images / "good.png")
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(images / "sub" / "also_good.jpg")
    (images / "garbage.jpg").write_bytes(b"this is no jpeg")
    whole = (images / "sub" / "also_good.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    pd.DataFrame({"file": ["good.png", "sub/also_good.jpg"], "label": ["dog", "cat"]}).to_csv(tmp_path / "l.csv", index=False)
    manifest, rejects = prepare(_folder_cfg(images, str(tmp_path / "l.csv")), tmp_path / "out")
    assert sorted(manifest["image_id"]) == ["good", "sub/also_good"]
    assert manifest.attrs["label_names"] == ["cat", "dog"]
    assert manifest.set_index("image_id").loc["good", "label_index"] == 1
    assert sorted(p.split("/")[-1] for p in rejects["path"]) == ["garbage.jpg", "truncated.jpg"]
    assert rejects["reason"].str.len().min() > 0
    write_manifest(manifest, rejects, tmp_path / "m.parquet", tmp_path / "r.csv")
    back = read_manifest(tmp_path / "m.parquet")
    assert back.attrs["label_names"] == ["cat", "dog"] and len(back) == 2
    assert len(shard_rows(back, 0, 1)) == 1 and len(shard_rows(back, 5, 1)) == 0


def test_imagenet_samples_from_mirror_match_its_labels():
    mirror = shared_dataset("imagenet-sample-images")
    cfg = {"kind": "imagenet_samples", "mirror": str(mirror), "archives": []}
    manifest, rejects = prepare(cfg, mirror / "__unused__")  # read in place, nothing written
    reference = pd.read_csv(mirror / "labels.csv").set_index("file")
    assert len(manifest) == 1000 and rejects.empty
    files = manifest["path"].str.rsplit("/", n=1).str[-1]
    np.testing.assert_array_equal(manifest["label_index"].to_numpy(), reference.loc[files, "class_index"].to_numpy())
    assert not (mirror / "__unused__").exists() or not any((mirror / "__unused__").iterdir())


def test_coco128_from_mirror_has_masks_and_labels(tmp_path):
    mirror = shared_dataset("coco128")
    manifest, _ = prepare({"kind": "coco128", "mirror": str(mirror), "archives": []}, tmp_path)
    assert len(manifest) == 256
    with_masks = manifest.dropna(subset=["mask_path"])
    assert len(with_masks) == 200
    assert (with_masks["label_index"] >= 0).all()
    assert "person" in manifest.attrs["label_names"]


def test_download_verifies_checksum(tmp_path):
    source = tmp_path / "payload.bin"
    source.write_bytes(b"cliplens" * 100)
    good = sha256_of(source)
    assert download(source.as_uri(), tmp_path / "dl" / "ok.bin", good) == good
    with pytest.raises(ChecksumError):
        download(source.as_uri(), tmp_path / "dl" / "bad.bin", "0" * 64)
    assert not (tmp_path / "dl" / "bad.bin").exists() and not (tmp_path / "dl" / "bad.bin.part").exists()


@pytest.mark.parametrize("member", ["../escape.txt", "/abs/escape.txt", "a/../../escape.txt"])
def test_archive_with_path_traversal_is_refused(tmp_path, member):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("fine.txt", "ok")
        handle.writestr(member, "pwned")
    with pytest.raises(ValueError, match="unsafe member"):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out").exists()


def test_safe_archive_extracts(tmp_path):
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("dir/a.txt", "a")
    assert [p.name for p in safe_extract_zip(archive, tmp_path / "out")] == ["a.txt"]
