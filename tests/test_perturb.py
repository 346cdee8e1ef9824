"""Tests of cliplens.perturbation.families on real photos (scikit-image samples at 224 px)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from skimage import data
from skimage.transform import resize

import cliplens.perturbation.families as P
from cliplens.perturbation.families import FAMILIES, image_seeds, perturb, perturb_imagecorruptions, resolve_params

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {
    "gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "defocus_blur", "motion_blur",
    "brightness", "contrast", "saturate", "jpeg_compression", "pixelate", "rotation", "zoom",
    "translation", "crop", "patch_grid", "cutout", "object_mask", "background_mask", "grayscale",
    "hue_shift", "invert",
}  # fmt: skip
STOCHASTIC = {
    "gaussian_noise", "shot_noise", "impulse_noise", "motion_blur", "elastic_transform", "fog",
    "rotation", "translation", "crop", "patch_grid", "cutout",
}  # fmt: skip
GEOMETRIC = {name for name, family in FAMILIES.items() if family.group == "geometric"}
SHARED = sorted(name for name, family in FAMILIES.items() if family.imagecorruptions_name)
IMAGENET_C_SATURATE = {"factor": [0.3, 0.1, 2, 5, 20], "offset": [0, 0, 0, 0.1, 0.2]}

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision are deprecated:DeprecationWarning"
)  # jpeg_compression; see docs/perturbations.md


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensors: one thread is faster and steadier on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """astronaut, chelsea, coffee as float [3, 3, 224, 224] in [0, 1] on the 8-bit grid."""
    names = ("astronaut", "chelsea", "coffee")
    images = [resize(getattr(data, name)(), (224, 224), anti_aliasing=True) for name in names]
    pixels = np.round(np.stack(images) * 255).astype(np.uint8)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255).contiguous()


@pytest.fixture(scope="module")
def masks() -> torch.Tensor:
    """A centred ellipse as the 'object' of every photo, bool [3, 224, 224]."""
    rows, cols = torch.meshgrid(torch.arange(224), torch.arange(224), indexing="ij")
    ellipse = ((rows - 112) / 70.0) ** 2 + ((cols - 112) / 50.0) ** 2 <= 1
    return ellipse.expand(3, -1, -1).clone()


@pytest.fixture(scope="module")
def seeds() -> torch.Tensor:
    return image_seeds(["astronaut", "chelsea", "coffee"], "gaussian_noise", 1, 0)


def coordinate_ramps(batch: int, height: int, width: int) -> torch.Tensor:
    """Images whose red/green channels are the column/row coordinates: MSE against them is the
    mean squared displacement of content (plus what fell outside), a geometric distance."""
    rows = torch.linspace(0, 1, height)[:, None].expand(height, width)
    cols = torch.linspace(0, 1, width)[None, :].expand(height, width)
    return torch.stack([cols, rows, torch.full_like(rows, 0.5)]).expand(batch, -1, -1, -1).contiguous()


def gradient_mse(images: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per-image MSE between the finite-difference gradients of two batches (change of detail)."""

    def gradients(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.diff(dim=-1).flatten(1), x.diff(dim=-2).flatten(1)], dim=1)

    return (gradients(images) - gradients(clean)).pow(2).mean(dim=1)


def mse(images: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    return (images - clean).pow(2).flatten(1).mean(dim=1)


def psnr(images: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    return -10 * torch.log10(mse(images, clean))


# ----------------------------------------------------------------------------- registry and validation


def test_registry_covers_required_families() -> None:
    assert REQUIRED <= set(FAMILIES)
    assert {"fog", "elastic_transform"} & set(FAMILIES)
    for name, family in FAMILIES.items():
        assert family.name == name and family.group in P.GROUPS
        assert family.doc and family.params
        assert all(len(values) == 5 for values in family.params.values()), name
    assert {name for name, family in FAMILIES.items() if family.needs_mask} == {"object_mask", "background_mask"}


def test_resolve_params_applies_overrides_and_names_valid_choices() -> None:
    assert resolve_params("gaussian_noise", None) == {"sigma": (0.08, 0.12, 0.18, 0.26, 0.38)}
    assert resolve_params("rotation", {"degrees": [1, 2, 3, 4, 5]}) == {"degrees": (1, 2, 3, 4, 5)}
    assert resolve_params("saturate", {"offset": [0] * 5})["factor"] == FAMILIES["saturate"].params["factor"]
    with pytest.raises(ValueError, match="valid families: .*gaussian_noise"):
        resolve_params("gausian_noise", None)
    with pytest.raises(ValueError, match=r"valid parameters: \['alias_blur', 'radius'\]"):
        resolve_params("defocus_blur", {"sigma": [1] * 5})
    with pytest.raises(ValueError, match="one value per severity"):
        resolve_params("rotation", {"degrees": [5, 10, 20]})
    with pytest.raises(ValueError, match="one value per severity"):
        resolve_params("rotation", {"degrees": "12345"})
    with pytest.raises(ValueError, match="finite numbers"):
        resolve_params("rotation", {"degrees": [5, 10, "x", 30, 45]})


def test_perturb_validates_inputs(photos: torch.Tensor, seeds: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="valid families"):
        perturb(photos, "blurr", 1, seeds)
    for severity in (-1, 6, 2.0, True):
        with pytest.raises(ValueError, match="severity"):
            perturb(photos, "contrast", severity, seeds)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        perturb(photos[:, :1], "contrast", 1, seeds)
    with pytest.raises(ValueError, match="or a uint8 one, got torch.int32"):
        perturb((photos * 255).to(torch.int32), "contrast", 1, seeds)
    with pytest.raises(ValueError, match="seeds"):
        perturb(photos, "contrast", 1, seeds[:2])
    with pytest.raises(ValueError, match="valid parameters"):
        perturb(photos, "contrast", 1, seeds, params={"sigma": [1] * 5})


def test_image_seeds_are_stable_and_keyed_on_every_field() -> None:
    seeds = image_seeds(["a.jpg", "b.jpg"], "fog", 3, 0)
    assert seeds.dtype == torch.int64 and seeds.shape == (2,)
    # blake2b digests, hard-coded: the same in every process, on every machine
    assert seeds.tolist() == [4484899401066704845, -1032211974243958869]
    variants = [
        image_seeds(["a.jpg"], "fog", 3, 0),
        image_seeds(["a.jpg"], "contrast", 3, 0),
        image_seeds(["a.jpg"], "fog", 2, 0),
        image_seeds(["a.jpg"], "fog", 3, 1),
    ]
    assert len({int(v) for v in variants}) == 4
    assert seeds[0] != seeds[1]
    with pytest.raises(ValueError, match="valid families"):
        image_seeds(["a.jpg"], "nope", 1, 0)


def test_hash_is_the_wrapping_uint32_hash() -> None:
    """Guards the int32 wrap-around the counter-based generator relies on (CPU and GPU alike)."""

    def reference(value: int) -> int:
        for _ in range(2):
            value ^= value >> 16
            value = (value * 0x45D9F3B) & 0xFFFFFFFF
        return value ^ (value >> 16)

    values = [0, 1, 12345, 2**31 - 1, 2**31, 2**32 - 1, 987654321]
    as_int32 = torch.tensor([v - 2**32 if v >= 2**31 else v for v in values], dtype=torch.int32)
    assert [int(h) & 0xFFFFFFFF for h in P._mix32_(as_int32)] == [reference(v) for v in values]


def test_uniform_and_normal_draws_have_the_right_distribution() -> None:
    seeds = torch.tensor([3, -5, 2**40 + 7])
    uniform = P._uniform(seeds, (100_000,), stream=11)
    assert 0 < uniform.min() and uniform.max() < 1
    assert uniform.mean(dim=1).sub(0.5).abs().max() < 0.005
    normal = P._normal(seeds, (100_001,), stream=12)
    assert normal.shape == (3, 100_001)
    assert normal.mean(dim=1).abs().max() < 0.01 and normal.std(dim=1).sub(1).abs().max() < 0.01
    correlation = torch.corrcoef(normal[:, :100_000])
    assert (correlation - torch.eye(3)).abs().max() < 0.01  # images' draws are independent


# ----------------------------------------------------------------------------- behaviour of every family


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_severity_zero_is_identity(family: str, photos: torch.Tensor, seeds: torch.Tensor) -> None:
    assert perturb(photos, family, 0, seeds) is photos


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_output_shape_dtype_range(family: str, masks: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 96, 130, generator=generator, dtype=torch.float64)
    image_masks = masks[:2, :96, :130]
    seeds = torch.tensor([1, 2])
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        out = perturb(images.to(dtype), family, 5, seeds, masks=image_masks)
        assert out.shape == images.shape and out.dtype == dtype and out.device == images.device
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        assert not torch.equal(out, images.to(dtype)), "severity 5 must change the image"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_deterministic_and_independent_of_batch(family: str, photos: torch.Tensor, masks: torch.Tensor) -> None:
    # 10 images: more than one CPU chunk of 224 px images
    images, image_masks = photos.repeat(4, 1, 1, 1)[:10], masks.repeat(4, 1, 1)[:10]
    seeds = image_seeds([f"image{i}" for i in range(10)], family, 3, 0)
    out = perturb(images, family, 3, seeds, masks=image_masks)
    assert torch.equal(out, perturb(images, family, 3, seeds, masks=image_masks))
    order = torch.tensor([7, 2, 9, 0, 4])
    subset = perturb(images[order], family, 3, seeds[order], masks=image_masks[order])
    torch.testing.assert_close(subset, out[order], atol=1e-6, rtol=0)  # FFT blurs: float rounding only
    single = perturb(images[5:6], family, 3, seeds[5:6], masks=image_masks[5:6])
    torch.testing.assert_close(single, out[5:6], atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_seed_dependence(family: str, photos: torch.Tensor, masks: torch.Tensor) -> None:
    """Stochastic families vary with the seed; deterministic ones ignore it."""
    images, image_masks = photos[:1].expand(8, -1, -1, -1), masks[:1].expand(8, -1, -1)
    out = perturb(images, family, 3, torch.arange(8) * 1_000_003, masks=image_masks)
    distinct = {tuple(o.flatten()[::997].tolist()) for o in out}
    if family in STOCHASTIC:
        assert len(distinct) > 1
    else:
        assert len(distinct) == 1


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_severity_is_monotone(family: str, photos: torch.Tensor, masks: torch.Tensor, seeds: torch.Tensor) -> None:
    """With the same seeds, the family's distance from the clean image rises with severity, per image:
    MSE on the photos; geometric families: MSE on coordinate ramps (mean squared displacement);
    fog: MSE of the gradients (ImageNet-C's severities 3 and 4 share one strength and differ in
    roughness only)."""
    clean = coordinate_ramps(3, 224, 224) if family in GEOMETRIC else photos
    distance = gradient_mse if family == "fog" else mse
    distances = torch.stack(
        [distance(perturb(clean, family, severity, seeds, masks=masks), clean) for severity in range(6)], dim=1
    )
    assert (distances.diff(dim=1) > 0).all(), f"{family}: {distances}"


# ----------------------------------------------------------------------------- masks


def test_mask_families_use_the_mask(photos: torch.Tensor, masks: torch.Tensor, seeds: torch.Tensor) -> None:
    inside = masks[:, None].expand_as(photos)
    for family, changed in (("object_mask", inside), ("background_mask", ~inside)):
        out = perturb(photos, family, 5, seeds, masks=masks)
        assert torch.equal(out[~changed], photos[~changed]), family
        assert torch.allclose(out[changed], torch.tensor(0.5)), family  # opacity 1: all grey
        half = perturb(photos, family, 5, seeds, params={"opacity": [0.5] * 5}, masks=masks)
        torch.testing.assert_close(half[changed], (photos[changed] + 0.5) / 2)


def _per_cell(condition: torch.Tensor) -> torch.Tensor:
    """Whether ``condition`` [B, 3, 224, 224] holds on every pixel of each 28 px cell: [B, 8, 8]."""
    return condition.unfold(2, 28, 28).unfold(3, 28, 28).flatten(-2).all(-1).all(1)


def test_patch_grid_fills_whole_cells_grey_and_higher_severities_fill_a_superset(
    photos: torch.Tensor, seeds: torch.Tensor
) -> None:
    """224 px = 8 cells of 28 px: each cell is untouched or all grey, round(fraction x 64) cells per
    image are grey, and every cell grey at one severity stays grey at the next."""
    grey_cells = []
    for severity, fraction in enumerate(FAMILIES["patch_grid"].params["fraction"], start=1):
        out = perturb(photos, "patch_grid", severity, seeds)
        grey = _per_cell(out == 0.5)  # [B, 8, 8]
        untouched = _per_cell(out == photos)
        assert (grey | untouched).all() and (grey.flatten(1).sum(1) == round(fraction * 64)).all(), severity
        grey_cells.append(grey)
    for lower, higher in zip(grey_cells, grey_cells[1:]):
        assert (higher | ~lower).all()


def test_cutout_fills_one_square_of_the_given_side_grey(photos: torch.Tensor, seeds: torch.Tensor) -> None:
    for severity, size in enumerate(FAMILIES["cutout"].params["size"], start=1):
        out = perturb(photos, "cutout", severity, seeds)
        changed = (out != photos).any(1)  # [B, H, W]
        side = round(size * 224)
        for image, region in zip(out, changed):
            rows, cols = region.any(1).nonzero()[:, 0], region.any(0).nonzero()[:, 0]
            top, left = int(rows.min()), int(cols.min())
            assert int(rows.max()) - top < side and int(cols.max()) - left < side, severity
            assert top + side <= 224 and left + side <= 224
            assert (image[:, top : top + side, left : left + side] == 0.5).all(), severity


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_invert_inverts_exactly_the_channel_values_at_or_above_the_threshold(
    severity: int, photos: torch.Tensor, seeds: torch.Tensor
) -> None:
    threshold = FAMILIES["invert"].params["threshold"][severity - 1]
    out = perturb(photos, "invert", severity, seeds)
    torch.testing.assert_close(out, torch.where(photos >= threshold, 1 - photos, photos))


def test_grayscale_blends_towards_the_luma_image(photos: torch.Tensor, seeds: torch.Tensor) -> None:
    """Luma with the ITU-R 601 weights (as torchvision's), blended with ``strength``."""
    luma = (0.2989 * photos[:, 0] + 0.587 * photos[:, 1] + 0.114 * photos[:, 2])[:, None].expand_as(photos)
    torch.testing.assert_close(perturb(photos, "grayscale", 5, seeds), luma, atol=1e-6, rtol=0)
    strength = FAMILIES["grayscale"].params["strength"][1]
    expected = (1 - strength) * photos + strength * luma
    torch.testing.assert_close(perturb(photos, "grayscale", 2, seeds), expected.clamp(0, 1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("severity", [1, 4])
def test_hue_shift_rotates_the_hsv_hue_and_keeps_saturation_and_value(
    severity: int, photos: torch.Tensor, seeds: torch.Tensor
) -> None:
    import colorsys

    shift = FAMILIES["hue_shift"].params["shift"][severity - 1]
    out = perturb(photos, "hue_shift", severity, seeds)
    picks = torch.randint(0, 224, (2, 50), generator=torch.Generator().manual_seed(0))
    for before, after in zip(
        photos[:, :, picks[0], picks[1]].permute(0, 2, 1).reshape(-1, 3),
        out[:, :, picks[0], picks[1]].permute(0, 2, 1).reshape(-1, 3),
    ):
        h0, s0, v0 = colorsys.rgb_to_hsv(*before.tolist())
        h1, s1, v1 = colorsys.rgb_to_hsv(*after.tolist())
        assert v1 == pytest.approx(v0, abs=1e-5) and s1 == pytest.approx(s0, abs=1e-4)
        if s0 > 0.05:
            assert (h1 - h0 - shift + 0.5) % 1 - 0.5 == pytest.approx(0, abs=1e-3)


def test_translation_shifts_whole_pixels_by_the_given_distance_and_fills_zero(photos: torch.Tensor, seeds: torch.Tensor) -> None:
    """Every output pixel is 0 (uncovered) or the input pixel one integer offset away, with the
    offset's length shift x 224 within rounding."""
    for severity, shift in enumerate(FAMILIES["translation"].params["shift"], start=1):
        out = perturb(photos, "translation", severity, seeds)
        for image, clean in zip(out, photos):
            covered = (image != 0).any(0)
            rows, cols = covered.any(1).nonzero()[:, 0], covered.any(0).nonzero()[:, 0]
            dy = int(rows.min()) if rows.min() > 0 else -(223 - int(rows.max()))
            dx = int(cols.min()) if cols.min() > 0 else -(223 - int(cols.max()))
            assert abs(math.hypot(dy, dx) - shift * 224) <= 1, (severity, dy, dx)
            moved = torch.roll(clean, (dy, dx), dims=(1, 2))
            assert torch.equal(image[:, covered], moved[:, covered]), severity


def test_mask_families_require_masks(photos: torch.Tensor, masks: torch.Tensor, seeds: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="needs segmentation masks"):
        perturb(photos, "object_mask", 2, seeds)
    with pytest.raises(ValueError, match=r"bool \[3, 224, 224\]"):
        perturb(photos, "background_mask", 2, seeds, masks=masks.float())
    assert perturb(photos, "object_mask", 0, seeds) is photos  # clean needs no mask


# ----------------------------------------------------------------------------- closeness to imagecorruptions


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("gaussian_blur", None),
        ("defocus_blur", None),
        ("brightness", None),
        ("contrast", None),
        ("saturate", IMAGENET_C_SATURATE),
        ("jpeg_compression", None),
        ("pixelate", None),
    ],
)
def test_deterministic_families_match_imagecorruptions(
    family: str, params: dict | None, photos: torch.Tensor, seeds: torch.Tensor
) -> None:
    """imagecorruptions truncates to uint8 (mean error 0.5/255); the values must agree beyond that."""
    for severity in range(1, 6):
        ours = perturb(photos, family, severity, seeds, params=params)
        reference = perturb_imagecorruptions(photos, family, severity, seeds)
        assert (ours - reference).abs().mean() < 1.0 / 255, (family, severity)
        assert (ours - reference).abs().max() < 12.0 / 255, (family, severity)
        assert psnr(ours, reference).min() > 40, (family, severity)


@pytest.mark.parametrize("factor", [0.6, 0.5, 0.37, 0.25])
@pytest.mark.parametrize("size", [(224, 224), (96, 130)])
def test_pixelate_is_pils_box_resize_down_and_up_on_floats(factor: float, size: tuple[int, int], photos: torch.Tensor) -> None:
    """Area pooling over PIL's BOX bins, then nearest upsampling: PIL's own BOX resizes of float
    images, to float rounding, also at ratios that are not whole numbers and on non-square images."""
    height, width = size
    images = photos[:2, :, :height, :width].contiguous()
    ours = perturb(images, "pixelate", 1, torch.zeros(2, dtype=torch.int64), params={"factor": [factor] * 5})
    small = (int(width * factor), int(height * factor))
    planes = images.permute(0, 2, 3, 1).numpy()
    reference = np.stack(
        [
            np.stack(
                [
                    np.asarray(
                        Image.fromarray(plane[..., c])
                        .resize(small, Image.Resampling.BOX)
                        .resize((width, height), Image.Resampling.BOX)
                    )
                    for c in range(3)
                ]
            )
            for plane in planes
        ]
    )
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_eight_bit_input_equals_its_floats(family: str, photos: torch.Tensor, masks: torch.Tensor, seeds: torch.Tensor) -> None:
    """uint8 pixels, planar or laid out as the loader yields them (channels-last), perturb exactly
    as their [0, 1] floats do, into float32; severity 0 gives the floats."""
    eight_bit = (photos * 255).round().to(torch.uint8)
    loader_layout = eight_bit.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert torch.equal(perturb(eight_bit, family, 0, seeds), photos)
    expected = perturb(photos, family, 4, seeds, masks=masks)
    for images in (eight_bit, loader_layout):
        out = perturb(images, family, 4, seeds, masks=masks)
        assert out.dtype == torch.float32 and torch.equal(out, expected)


def test_only_jpeg_reads_bytes() -> None:
    assert {name for name, family in FAMILIES.items() if family.reads_bytes} == {"jpeg_compression"}


def test_reference_backend_takes_eight_bit_input(photos: torch.Tensor, seeds: torch.Tensor) -> None:
    eight_bit = (photos * 255).round().to(torch.uint8)
    out = perturb_imagecorruptions(eight_bit, "contrast", 2, seeds)
    assert out.dtype == torch.float32 and torch.equal(out, perturb_imagecorruptions(photos, "contrast", 2, seeds))


@pytest.mark.parametrize("quality", [7, 25, 90])
def test_jpeg_compression_is_pils_libjpeg_round_trip(quality: int, photos: torch.Tensor) -> None:
    """Bit-identical to encoding with PIL (as imagecorruptions does) and decoding, batched."""
    seeds = torch.zeros(3, dtype=torch.int64)
    ours = perturb(photos, "jpeg_compression", 1, seeds, params={"quality": [quality] * 5})
    expected = []
    for image in (photos * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        expected.append(np.asarray(Image.open(buffer).convert("RGB")))
    reference = torch.from_numpy(np.stack(expected)).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(ours, reference)


@pytest.mark.parametrize("sigma", [0.5, 1, 3, 6, 9])
def test_gaussian_blur_is_scipys_filter_in_both_paths(sigma: float, photos: torch.Tensor) -> None:
    """Depthwise convolutions up to 63 taps, FFT beyond (sigma 9: 73 taps): scipy's Gaussian filter
    (truncate 4, edges replicated) to float rounding either way; sigma 0 leaves the image."""
    from scipy import ndimage

    seeds = torch.zeros(3, dtype=torch.int64)
    ours = perturb(photos, "gaussian_blur", 1, seeds, params={"sigma": [sigma] * 5})
    reference = ndimage.gaussian_filter(photos.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
    np.testing.assert_allclose(ours.numpy(), np.clip(reference, 0, 1), atol=2e-6, rtol=0)
    assert torch.equal(perturb(photos, "gaussian_blur", 1, seeds, params={"sigma": [0] * 5}), photos)


@pytest.mark.parametrize(
    ("family", "params", "fragments"),
    [
        ("jpeg_compression", {"quality": [0, 18, 15, 10, 7]}, ["jpeg_compression.quality", "severity 1: 0", "[1, 100]"]),
        ("jpeg_compression", {"quality": [25, 18, 15, 10, 101]}, ["severity 5: 101", "whole numbers in [1, 100]"]),
        ("jpeg_compression", {"quality": [25, 18, 15.5, 10, 7]}, ["severity 3: 15.5", "whole numbers"]),
        ("shot_noise", {"photons": [60, 25, 0, 5, -3]}, ["shot_noise.photons", "severity 3: 0, severity 5: -3", "(0, 10000]"]),
        ("pixelate", {"factor": [0, 0.5, 0.4, 0.3, 0.25]}, ["pixelate.factor", "severity 1: 0", "(0, 1]"]),
        ("zoom", {"scale": [0.9, 0.75, 0.6, 0.45, 0]}, ["zoom.scale", "severity 5: 0", "(0, 1]"]),
        ("gaussian_blur", {"sigma": [-1, 2, 3, 4, 6]}, ["gaussian_blur.sigma", "severity 1: -1", "[0, inf]"]),
        ("patch_grid", {"cells": [8, 8, 0, 8, 8]}, ["patch_grid.cells", "severity 3: 0", "[1, 64]"]),
    ],
)
def test_parameters_outside_their_domain_fail_in_the_library(
    family: str, params: dict, fragments: list[str], photos: torch.Tensor, seeds: torch.Tensor
) -> None:
    """Library calls fail before computing anything, naming the family, parameter, severities and valid values."""
    with pytest.raises(ValueError) as error:
        perturb(photos, family, 1, seeds, params=params)
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)
    with pytest.raises(ValueError, match="outside the valid values"):
        resolve_params(family, params)


@pytest.mark.parametrize(
    ("family", "statistic", "tolerance"),
    [
        ("gaussian_noise", "residual_std", 0.03),
        ("shot_noise", "residual_std", 0.03),
        ("impulse_noise", "changed", 0.05),
        ("motion_blur", "mse", 0.15),
        ("elastic_transform", "mse", 0.1),
        ("fog", "mean", 0.1),
        ("fog", "mse", 0.15),
    ],
)
def test_stochastic_families_match_imagecorruptions_statistics(
    family: str, statistic: str, tolerance: float, photos: torch.Tensor
) -> None:
    """Same statistic (relative tolerance) over 6 draws per photo at every severity."""
    images = photos.repeat(6, 1, 1, 1)
    seeds = image_seeds([str(i) for i in range(len(images))], family, 1, 0)

    def measure(out: torch.Tensor) -> float:
        if statistic == "residual_std":
            return (out - images).std().item()
        if statistic == "changed":
            return ((out - images).abs() > 0.5 / 255).float().mean().item()
        if statistic == "mean":
            return out.mean().item()
        return mse(out, images).mean().item()

    for severity in range(1, 6):
        ours = measure(perturb(images, family, severity, seeds))
        reference = measure(perturb_imagecorruptions(images, family, severity, seeds))
        assert abs(ours / reference - 1) < tolerance, (family, severity, ours, reference)


@pytest.mark.parametrize("angle", [-45.0, -20.0, 0.0, 17.0, 44.0])
def test_motion_kernel_matches_imagecorruptions_at_a_given_angle(angle: float, photos: torch.Tensor) -> None:
    from imagecorruptions.corruptions import _motion_blur

    pixels = (photos[0] * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)
    reference = torch.from_numpy(_motion_blur(pixels, radius=15, sigma=5, angle=angle)).permute(2, 0, 1)
    kernel, centre = P._motion_kernels(torch.tensor([angle]), radius=15, sigma=5)
    ours = P._convolve(photos[:1] * 255, kernel, padding_mode="replicate", centre=centre)[0]
    assert (ours - reference.float()).abs().max() < 1e-3


def test_imagecorruptions_backend(photos: torch.Tensor, seeds: torch.Tensor) -> None:
    first = perturb_imagecorruptions(photos[:2], "impulse_noise", 2, seeds[:2])
    assert first.shape == photos[:2].shape and first.dtype == photos.dtype
    assert torch.equal(first, perturb_imagecorruptions(photos[:2], "impulse_noise", 2, seeds[:2]))
    assert perturb_imagecorruptions(photos, "fog", 0) is photos
    with pytest.raises(ValueError, match="no imagecorruptions counterpart; supported: .*gaussian_noise"):
        perturb_imagecorruptions(photos, "rotation", 1)


# ----------------------------------------------------------------------------- docs and configs


def test_docs_table_lists_every_family_with_its_defaults() -> None:
    text = (ROOT / "docs" / "perturbations.md").read_text()
    for name, family in FAMILIES.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"docs/perturbations.md has no table row for {name}"
        for key, values in family.params.items():
            listed = ", ".join(f"{v:g}" for v in values)
            assert f"{key}: {listed}" in row, (name, key, listed, row)


@pytest.mark.parametrize("config", ["default", "smoke", "imagenet_c"])
def test_perturbation_configs_are_valid(config: str) -> None:
    spec = yaml.safe_load((ROOT / "config" / "perturbation" / f"{config}.yaml").read_text())
    assert set(spec) == {"seeds", "severities", "backend", "families"}
    assert spec["backend"] in ("torch", "imagecorruptions")
    assert set(spec["severities"]) <= set(P.SEVERITIES) and spec["seeds"]
    for family, overrides in spec["families"].items():
        resolve_params(family, overrides)
    if config == "imagenet_c":
        assert set(spec["families"]) == set(SHARED)
        assert spec["families"]["saturate"] == IMAGENET_C_SATURATE
    else:
        assert not any(FAMILIES[f].needs_mask for f in spec["families"]), "the default dataset has no masks"
    if config == "smoke":
        assert spec["severities"] == [1, 3, 5] and 2 <= len(spec["families"]) <= 3
