"""Model loading: tiny random models, checkpoints in both formats, weights preflight, embeddings."""

from __future__ import annotations

import zipfile

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

import cliplens.weights
from cliplens.config import ConfigError
from cliplens.images import pixel_transform, pixels_of
from cliplens.models import (
    build_module,
    check_checkpoint_fits,
    create_tiny_clip,
    encode_pixels,
    save_checkpoint,
)
from cliplens.text import encode_prompts
from cliplens.weights import WeightsUnavailableError, ensure_weights


def _photos():
    import skimage.data

    return [Image.fromarray(skimage.data.astronaut()), Image.fromarray(skimage.data.chelsea())]


def test_tiny_models_are_seeded_and_differ_by_seed():
    a, b, c = create_tiny_clip("vit", seed=0), create_tiny_clip("vit", seed=0), create_tiny_clip("vit", seed=1)
    pa, pb, pc = (m.visual.conv1.weight for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)
    assert len(a.visual.transformer.resblocks) == 4
    assert a.visual.transformer.resblocks[0].attn.num_heads == 4


@pytest.mark.parametrize("fmt", ["open_clip", "openai"])
def test_checkpoint_formats_load_identical_embeddings(tmp_path, tiny_model_cfg, fmt):
    reference = create_tiny_clip("vit", seed=0)
    path = save_checkpoint(reference, tmp_path / f"tiny-{fmt}.pt", fmt)
    cfg = {**tiny_model_cfg, "source": "checkpoint", "checkpoint": str(path), "name": "ckpt"}
    module, provenance = build_module(cfg)
    assert provenance["checkpoint_format"] == fmt
    assert len(provenance["checkpoint_sha256"]) == 64
    images = torch.rand(2, 3, 224, 224)
    tokens = open_clip.get_tokenizer("cliplens-tiny-vit")(["a cat", "a rocket"])
    with torch.no_grad():
        tolerance = 0 if fmt == "open_clip" else 5e-3  # OpenAI format stores fp16 weights
        torch.testing.assert_close(
            module.encode_image(images), _fp16_roundtrip(reference, fmt).encode_image(images), atol=tolerance, rtol=0
        )
        torch.testing.assert_close(
            module.encode_text(tokens), _fp16_roundtrip(reference, fmt).encode_text(tokens), atol=tolerance, rtol=0
        )


def test_a_checkpoint_that_does_not_fit_its_arch_names_model_arch(tmp_path, tiny_model_cfg):
    path = save_checkpoint(create_tiny_clip("vit", seed=0), tmp_path / "tiny.pt")
    fitting = {**tiny_model_cfg, "source": "checkpoint", "checkpoint": str(path), "name": "ckpt"}
    check_checkpoint_fits(fitting)  # the tiny arch fits its own checkpoint
    wrong = {**fitting, "arch": "ViT-B-32"}
    for check in (check_checkpoint_fits, build_module):
        with pytest.raises(ConfigError, match=r"does not fit model.arch='ViT-B-32'.*set model__arch"):
            check(wrong)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"truncated.pt' cannot be read as a checkpoint"):
        check_checkpoint_fits({**fitting, "checkpoint": str(truncated)})


def _fp16_roundtrip(model, fmt):
    if fmt == "open_clip":
        return model
    copy = create_tiny_clip("vit", seed=0)
    copy.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    return copy


def test_torchscript_archive_needs_explicit_trust(tmp_path, tiny_model_cfg):
    path = tmp_path / "scripted.pt"
    with zipfile.ZipFile(path, "w") as archive:  # the layout of a TorchScript archive
        archive.writestr("scripted/constants.pkl", b"")
        archive.writestr("scripted/data.pkl", b"")
    cfg = {**tiny_model_cfg, "source": "checkpoint", "checkpoint": str(path), "name": "ckpt"}
    with pytest.raises(ValueError, match="trust_torchscript"):
        build_module(cfg)


def test_missing_pretrained_weights_name_the_ways_out(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", offline)
    monkeypatch.setattr(cliplens.weights, "hub_unreachable", lambda: None)  # the Hub answers, the download fails
    cfg = {"name": "vit", "source": "open_clip", "arch": "ViT-B-32", "pretrained": "openai", "cache_dir": str(tmp_path)}
    with pytest.raises(WeightsUnavailableError) as error:
        ensure_weights(cfg)
    message = str(error.value)
    assert "no route to huggingface.co" in message
    assert "model=tiny_random" in message and "HF_HUB_OFFLINE=1" in message and "model__checkpoint" in message


@pytest.mark.parametrize("cached", [True, False])
def test_an_unreachable_hub_is_not_retried_only_the_cache_read(monkeypatch, tmp_path, cached):
    import huggingface_hub

    def no_route(*args, **kwargs):
        raise OSError("no route to host")

    modes = []

    def from_cache(*args, **kwargs):
        modes.append(huggingface_hub.constants.HF_HUB_OFFLINE)
        if not cached:
            raise FileNotFoundError("not in the cache")
        return str(tmp_path / "weights.bin")

    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(cliplens.weights.socket, "create_connection", no_route)
    cliplens.weights.hub_unreachable.cache_clear()
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", from_cache)
    cfg = {"name": "vit", "source": "open_clip", "arch": "ViT-B-32", "pretrained": "openai", "cache_dir": str(tmp_path)}
    if cached:
        assert ensure_weights(cfg) == str(tmp_path / "weights.bin")
    else:
        with pytest.raises(WeightsUnavailableError, match=r"cannot be reached \(no route to host\), and the weights are not"):
            ensure_weights(cfg)
    assert modes == [True]  # the one attempt ran in offline mode
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # and the mode was restored
    cliplens.weights.hub_unreachable.cache_clear()  # not this test's answer for the next one


def test_embeddings_equal_open_clip_encode_image_and_text(tiny_loaded):
    """The pipeline's image path (pixel transform + device normalisation) equals open_clip's own."""
    photos = _photos()
    preprocess = image_transform_v2(PreprocessCfg(**tiny_loaded.provenance["preprocess"]), is_train=False)
    transform = pixel_transform(tiny_loaded)
    ours = encode_pixels(tiny_loaded, pixels_of(photos, transform))
    with torch.no_grad():
        theirs = F.normalize(tiny_loaded.model.encode_image(torch.stack([preprocess(p) for p in photos])), dim=-1)
        texts = ["a photo of an astronaut", "a photo of a cat"]
        reference_text = F.normalize(tiny_loaded.model.encode_text(tiny_loaded.tokenizer(texts)), dim=-1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(encode_prompts(tiny_loaded, texts, batch_size=1), reference_text, atol=1e-5, rtol=0)


def test_load_model_records_provenance(tiny_loaded):
    assert tiny_loaded.is_random
    assert tiny_loaded.embed_dim == 64
    assert tiny_loaded.provenance["open_clip_version"] == open_clip.__version__
    assert tiny_loaded.device.type in ("cpu", "cuda")
