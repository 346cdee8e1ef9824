"""The image loader: 8-bit batches converted on the device, bad files skipped, bytes for JPEG."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data
from torchvision.transforms import functional as TF

import cliplens.perturbation.embedding as embedding
from cliplens.image_files import load_rgb
from cliplens.images import iterate_batches, preprocess_without_normalize
from cliplens.io import IMAGE_FIELDS, EmbeddingWriter, embedding_schema
from cliplens.perturbation.grid import CLEAN_SPEC, PerturbationSpec, apply_spec, family_specs
from cliplens.pixels import unit_pixels

NAMES = ["astronaut", "chelsea", "coffee"]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.mark.parametrize("device", DEVICES)
def test_every_level_becomes_exactly_value_over_255(device: str) -> None:
    """As torchvision's ToTensor computes on the CPU; CUDA's division by a Python number would not."""
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 256, 1, 1).expand(1, 256, 2, 3)
    pixels = unit_pixels(levels.permute(0, 3, 2, 1).to(device))  # [1, 3, 2, 256], channels-last memory
    assert pixels.dtype == torch.float32 and pixels.is_contiguous()
    expected = torch.from_numpy(np.arange(256, dtype=np.float32) / np.float32(255))
    assert torch.equal(pixels.cpu(), expected.expand(1, 3, 2, 256))


def test_clean_cells_give_floats_of_eight_bit_pixels() -> None:
    eight_bit = torch.arange(48, dtype=torch.uint8).reshape(1, 3, 4, 4)
    for spec in (CLEAN_SPEC, PerturbationSpec("jpeg_compression", 0, 0)):
        assert torch.equal(apply_spec(eight_bit, ["a"], spec), eight_bit.float() / 255)


@pytest.fixture
def rows(tmp_path) -> pd.DataFrame:
    """Three photos and, second, a file that is not an image."""
    paths = []
    for name in NAMES:
        Image.fromarray(getattr(data, name)()).save(tmp_path / f"{name}.png")
        paths.append(str(tmp_path / f"{name}.png"))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    paths.insert(1, str(tmp_path / "broken.png"))
    return pd.DataFrame({"image_id": [NAMES[0], "broken", *NAMES[1:]], "path": paths, "mask_path": None, "label_index": 0})


@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
def test_batches_are_open_clips_pixels_travelling_as_bytes(rows: pd.DataFrame, resize_mode: str) -> None:
    transform = preprocess_without_normalize({"size": 64, "resize_mode": resize_mode})
    cpu = torch.device("cpu")
    batches = list(iterate_batches(rows, transform, 64, 4, 0, cpu))
    eight_bit = list(iterate_batches(rows, transform, 64, 4, 0, cpu, eight_bit=True))
    (kept, pixels, _), (kept_bytes, raw, _) = batches[0], eight_bit[0]
    assert kept["image_id"].tolist() == kept_bytes["image_id"].tolist() == NAMES  # the broken file is skipped
    assert raw.dtype == torch.uint8 and raw.shape == (3, 3, 64, 64)
    assert raw.is_contiguous(memory_format=torch.channels_last)  # as decoded: no reordering before the device
    assert pixels.dtype == torch.float32 and pixels.is_contiguous()
    assert torch.equal(pixels, raw.float() / 255)
    # what open_clip's own eval transform computes before normalising (geometry, then ToTensor)
    expected = []
    for path in kept["path"]:
        image = load_rgb(path)
        for step in transform.transforms[:-1]:
            image = step(image)
        expected.append(TF.to_tensor(image))
    assert torch.equal(pixels, torch.stack(expected))


def test_the_embedding_step_hands_jpeg_the_bytes(rows: pd.DataFrame, tiny_loaded, tmp_path, monkeypatch) -> None:
    seen: dict[str, set[torch.dtype]] = {}
    apply_spec = embedding.apply_spec

    def spy(pixels, ids, spec, masks=None, backend="torch"):
        seen.setdefault(spec.family, set()).add(pixels.dtype)
        return apply_spec(pixels, ids, spec, masks, backend)

    monkeypatch.setattr(embedding, "apply_spec", spy)
    specs = [CLEAN_SPEC, *family_specs("jpeg_compression", [2], [0], {}), *family_specs("contrast", [2], [0], {})]
    schema = embedding_schema(IMAGE_FIELDS, tiny_loaded.embed_dim, "float32", {})
    with EmbeddingWriter(tmp_path / "embeddings.parquet", schema) as writer:
        written = embedding.extract_image_embeddings(tiny_loaded, rows, specs, writer, batch_size=4)
    assert written == len(NAMES) * len(specs)
    assert seen == {"clean": {torch.float32}, "jpeg_compression": {torch.uint8}, "contrast": {torch.float32}}
    # and the reference backend gets floats, as it always has
    seen.clear()
    with EmbeddingWriter(tmp_path / "reference.parquet", schema) as writer:
        embedding.extract_image_embeddings(tiny_loaded, rows, specs[:2], writer, batch_size=4, backend="imagecorruptions")
    assert seen == {"clean": {torch.float32}, "jpeg_compression": {torch.float32}}
