"""Perturbation families: batched, seeded image corruptions at five severities."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor

from cliplens.perturbation import PARAMETER_DOMAINS
from cliplens.pixels import float_dtype, uint8_images, unit_pixels

SEVERITIES = (1, 2, 3, 4, 5)


GROUPS = ("noise", "blur", "photometric", "digital", "weather", "geometric", "occlusion", "colour")


REFERENCE_SIZE = 224  # side length at which ImageNet-C's pixel-valued parameters are defined


_SHIFTED_ADDS_TAPS_MAX = 11  # short Gaussian kernels: one shifted add per tap beats a convolution call


_SEPARABLE_TAPS_MAX = 63  # longer Gaussian kernels are applied by FFT


_CPU_CHUNK_PIXELS = 8 * 224 * 224  # CPU batches run in chunks this large: small temporaries stay cached


# torchvision is imported inside the five families that use it: importing it takes about 1.5 s
# (it imports torch._dynamo), which validating a config (FAMILIES, resolve_params) need not pay.


@dataclass(frozen=True)
class Family:
    """A perturbation family: its default parameter value at each severity 1..5 (read-only;
    :func:`resolve_params` returns a copy with overrides applied)."""

    name: str
    group: str
    params: Mapping[str, tuple]
    needs_mask: bool
    imagecorruptions_name: str | None
    doc: str
    reads_bytes: bool = False
    """Whether the family works on 8-bit pixels, so that :func:`perturb` hands it uint8 input as is."""


FAMILIES: dict[str, Family] = {}


_APPLY: dict[str, Callable[..., Tensor]] = {}


def _family(
    group: str,
    params: Mapping[str, Sequence[float]],
    *,
    needs_mask: bool = False,
    imagecorruptions_name: str | None = None,
    reads_bytes: bool = False,
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Register the decorated function as the family named after it (without the underscore).

    The function takes (images float [B,3,H,W], or uint8 as well if ``reads_bytes``, seeds int64
    [B], one value per parameter, and ``masks`` if ``needs_mask``) and returns a new, unclamped
    float tensor.
    """

    def register(apply: Callable[..., Tensor]) -> Callable[..., Tensor]:
        name = apply.__name__.lstrip("_")
        FAMILIES[name] = Family(
            name=name,
            group=group,
            params={key: tuple(values) for key, values in params.items()},
            needs_mask=needs_mask,
            imagecorruptions_name=imagecorruptions_name,
            doc=inspect.getdoc(apply) or "",
            reads_bytes=reads_bytes,
        )
        _APPLY[name] = apply
        return apply

    return register


def resolve_params(family: str, overrides: Mapping[str, Sequence] | None) -> dict[str, tuple]:
    """Default per-severity parameters of ``family`` with ``overrides`` applied, validated: known
    names, one finite number per severity, each inside the parameter's domain
    (``cliplens.perturbation.PARAMETER_DOMAINS``)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown perturbation family {family!r}; valid families: {sorted(FAMILIES)}")
    resolved = dict(FAMILIES[family].params)
    for key, values in (overrides or {}).items():
        if key not in resolved:
            raise ValueError(f"unknown parameter {key!r} for family {family!r}; valid parameters: {sorted(resolved)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != len(SEVERITIES):
            raise ValueError(
                f"parameter {key!r} of family {family!r} needs one value per severity "
                f"{list(SEVERITIES)} (a list of {len(SEVERITIES)}), got {values!r}"
            )
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise ValueError(f"parameter {key!r} of family {family!r} needs finite numbers, got {values!r}")
        domain = PARAMETER_DOMAINS.get((family, key))
        outside = [(severity, v) for severity, v in zip(SEVERITIES, values) if domain and not domain.contains(v)]
        if outside:
            shown = ", ".join(f"severity {severity}: {v!r}" for severity, v in outside)
            raise ValueError(f"{family}.{key}: {shown} outside the valid values {domain}")
        resolved[key] = tuple(values)
    return resolved


def image_seeds(image_ids: Sequence[str], family: str, severity: int, seed: int) -> Tensor:
    """One int64 seed per image from (image id, family, severity, seed), stable across processes."""
    _check_family(family)
    _check_severity(severity)
    digests = (hashlib.blake2b(json.dumps([str(i), family, severity, seed]).encode(), digest_size=8).digest() for i in image_ids)
    return torch.tensor([int.from_bytes(d, "little", signed=True) for d in digests], dtype=torch.int64)


def perturb(
    images: Tensor,
    family: str,
    severity: int,
    seeds: Tensor,
    params: Mapping[str, Sequence] | None = None,
    masks: Tensor | None = None,
) -> Tensor:
    """Perturb a batch: ``images`` [B,3,H,W] float in [0,1] or uint8, int64 ``seeds`` [B], bool ``masks`` [B,H,W].

    ``params`` overrides the family's per-severity defaults (see :func:`resolve_params`);
    ``masks`` (True = object) are needed by families with ``needs_mask``. 8-bit images go as they
    are to families that read bytes (``reads_bytes``: JPEG) and as [0, 1] floats to the rest
    (:func:`cliplens.pixels.unit_pixels`). Returns a new tensor with the shape and device of
    ``images`` and its dtype (float32 for uint8 input), clamped to [0, 1]; severity 0 returns float
    ``images`` themselves.
    """
    values = resolve_params(family, params)
    _check_severity(severity)
    _check_batch(images, seeds)
    dtype = float_dtype(images)
    if severity == 0 or images.shape[0] == 0:
        return unit_pixels(images)
    needs_mask = FAMILIES[family].needs_mask
    if needs_mask:
        masks = _checked_masks(masks, images, family)
    at_severity = {key: value[severity - 1] for key, value in values.items()}
    if images.dtype == torch.uint8:
        work = images if FAMILIES[family].reads_bytes else unit_pixels(images)
    else:
        work = (images if images.dtype == torch.float64 else images.float()).contiguous()
    seeds = seeds.to(device=images.device, dtype=torch.int64)
    chunk = len(work)
    if work.device.type == "cpu" and not FAMILIES[family].reads_bytes:  # libjpeg works image by image anyway
        chunk = max(1, _CPU_CHUNK_PIXELS // (work.shape[-2] * work.shape[-1]))

    def apply(part: slice) -> Tensor:
        mask_arg = {"masks": masks[part]} if needs_mask and masks is not None else {}  # checked above
        return _APPLY[family](work[part], seeds[part], **at_severity, **mask_arg)

    if chunk >= len(work):  # one chunk (always on a GPU): no second batch-sized buffer
        return apply(slice(None)).clamp_(0.0, 1.0).to(dtype)
    out = torch.empty_like(work)  # each chunk is clamped straight into its place (8-bit work is never chunked)
    for start in range(0, len(work), chunk):
        part = slice(start, start + chunk)
        torch.clamp(apply(part), 0.0, 1.0, out=out[part])
    return out.to(dtype)


def perturb_imagecorruptions(images: Tensor, family: str, severity: int, seeds: Tensor | None = None) -> Tensor:
    """Reference backend: the ``imagecorruptions`` package applied image by image (slow, CPU); ``images``
    and the result as in :func:`perturb`.

    Uses ImageNet-C's fixed parameters at every image size (no overrides). With ``seeds``
    (int64 [B]) numpy's global random state is seeded per image and restored afterwards.
    """
    _check_family(family)
    _check_severity(severity)
    _check_batch(images, seeds)
    name = FAMILIES[family].imagecorruptions_name
    if name is None:
        supported = sorted(f.name for f in FAMILIES.values() if f.imagecorruptions_name)
        raise ValueError(f"family {family!r} has no imagecorruptions counterpart; supported: {supported}")
    if severity == 0:
        return unit_pixels(images)
    try:
        from imagecorruptions import corrupt
    except ImportError as error:
        raise ImportError(
            "the imagecorruptions backend needs the package 'imagecorruptions-imaug' (pip install 'cliplens[imagecorruptions]')"
        ) from error
    pixels = uint8_images(images)
    state = np.random.get_state()
    corrupted = []
    try:
        for index, image in enumerate(pixels):
            kwargs = {}
            if seeds is not None:
                image_seed = int(seeds[index]) % 2**32
                np.random.seed(image_seed)
                if name == "impulse_noise":  # scikit-image draws from its own generator
                    kwargs["seed"] = image_seed
            corrupted.append(corrupt(image, corruption_name=name, severity=severity, **kwargs))
    finally:
        np.random.set_state(state)
    out = torch.from_numpy(np.stack(corrupted)).permute(0, 3, 1, 2).to(images.device)
    return unit_pixels(out).to(float_dtype(images))


def _check_family(family: str) -> None:
    resolve_params(family, None)


def _check_severity(severity: int) -> None:
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= len(SEVERITIES):
        raise ValueError(f"severity must be an int in 0..{len(SEVERITIES)} (0 = clean), got {severity!r}")


def _check_batch(images: Tensor, seeds: Tensor | None) -> None:
    pixel_type = isinstance(images, Tensor) and (images.is_floating_point() or images.dtype == torch.uint8)
    if not pixel_type or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be a float tensor [B, 3, H, W] in [0, 1] or a uint8 one, got "
            f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}"
        )
    if seeds is None:
        return
    if not isinstance(seeds, Tensor) or seeds.shape != images.shape[:1] or seeds.is_floating_point():
        raise ValueError(
            f"seeds must be an int64 tensor [B] with B = {images.shape[0]}, got "
            f"{getattr(seeds, 'dtype', type(seeds))} {tuple(getattr(seeds, 'shape', ()))}"
        )


def _checked_masks(masks: Tensor | None, images: Tensor, family: str) -> Tensor:
    expected = (images.shape[0], images.shape[2], images.shape[3])
    if masks is None:
        raise ValueError(f"family {family!r} needs segmentation masks (bool [B, H, W], True = object); none were given")
    if masks.dtype != torch.bool or tuple(masks.shape) != expected:
        raise ValueError(f"masks for {family!r} must be bool {list(expected)}, got {masks.dtype} {list(masks.shape)}")
    return masks.to(images.device)


_MIX_MULTIPLIER = 0x45D9F3B


_STREAM_MULTIPLIER = 0x2545F491


def _mix32_(values: Tensor) -> Tensor:
    """Bijective 32-bit integer hash, in place on an int32 tensor (wrapping multiplies, logical shifts)."""
    for _ in range(2):
        values ^= (values >> 16).bitwise_and_(0xFFFF)
        values *= _MIX_MULTIPLIER
    values ^= (values >> 16).bitwise_and_(0xFFFF)
    return values


def _low32(values: Tensor) -> Tensor:
    """The low 32 bits of int64 values as int32 (two's complement)."""
    low = values & 0xFFFFFFFF
    return (low - ((low >> 31) << 32)).to(torch.int32)


def _random_bits(seeds: Tensor, count: int, stream: int) -> Tensor:
    """int32 [B, count] of 32 random bits: a hash of (image seed, stream, element index)."""
    stream_key = (stream * _STREAM_MULTIPLIER) & 0x7FFFFFFF
    offset = _mix32_(_mix32_(_low32(seeds) ^ stream_key) ^ _low32(seeds >> 32))
    stride = _mix32_(offset ^ 0x5BD1E995) | 1
    counter = torch.arange(count, dtype=torch.int32, device=seeds.device)
    return _mix32_((counter * stride[:, None]).add_(offset[:, None]))


def _uniform(seeds: Tensor, shape: tuple[int, ...], stream: int) -> Tensor:
    """float32 [B, *shape] uniform in (0, 1) with 24-bit resolution."""
    bits = _random_bits(seeds, math.prod(shape), stream).bitwise_right_shift_(8).bitwise_and_(0xFFFFFF)
    return bits.float().add_(0.5).mul_(2.0**-24).view(len(seeds), *shape)


def _random_halves(seeds: Tensor, count: int, stream: int) -> Tensor:
    """int32 [B, count] of 16 random bits each: both halves of ceil(count / 2) hashes."""
    bits = _random_bits(seeds, (count + 1) // 2, stream)
    return torch.cat([(bits >> 16).bitwise_and_(0xFFFF), bits.bitwise_and_(0xFFFF)], dim=1)[:, :count].contiguous()


@functools.lru_cache(maxsize=8)
def _normal_quantiles(device: torch.device) -> Tensor:
    """Standard normal quantiles at the 2**16 midpoints (k + 0.5) / 2**16 (|z| <= 4.3)."""
    midpoints = (torch.arange(2**16, dtype=torch.float64) + 0.5) / 2**16
    return torch.special.ndtri(midpoints).float().to(device)


def _normal(seeds: Tensor, shape: tuple[int, ...], stream: int) -> Tensor:
    """float32 [B, *shape] standard normal, by inverse-CDF lookup of 16-bit uniforms (tails cut at 4.3)."""
    halves = _random_halves(seeds, math.prod(shape), stream)
    return _normal_quantiles(seeds.device).index_select(0, halves.view(-1)).view(len(seeds), *shape)


def _pixel_scale(images: Tensor) -> float:
    """Factor from ImageNet-C's 224 px parameters to this image size."""
    return min(images.shape[-2:]) / REFERENCE_SIZE


def _gaussian_kernel1d(sigma: float, radius: int, device: torch.device) -> Tensor:
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def _fft_length(minimum: int) -> int:
    """Smallest length >= minimum with prime factors 2, 3, 5 only (fast FFT sizes)."""
    length = minimum
    while True:
        rest = length
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return length
        length += 1


def _convolve(images: Tensor, kernels: Tensor, padding_mode: str, centre: tuple[int, int] | None = None) -> Tensor:
    """Convolve images [B,C,H,W] with kernels [1 or B, kh, kw] via FFT; ``kernels[..., i, j]`` weighs
    the offset (i, j) - ``centre`` (default: the middle of an odd-sized kernel).

    ``padding_mode`` is a ``torch.nn.functional.pad`` mode: 'replicate' = scipy/skimage
    'nearest', 'reflect' = OpenCV's default BORDER_REFLECT_101.
    """
    height, width = images.shape[-2:]
    kernel_h, kernel_w = kernels.shape[-2:]
    centre_h, centre_w = centre or (kernel_h // 2, kernel_w // 2)
    padding = (kernel_w - 1 - centre_w, centre_w, kernel_h - 1 - centre_h, centre_h)
    padded = nnf.pad(images, padding, mode=padding_mode)
    size = (_fft_length(padded.shape[-2]), _fft_length(padded.shape[-1]))
    spectrum = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(kernels, s=size).unsqueeze(1)
    out = torch.fft.irfft2(spectrum, s=size)
    return out[..., kernel_h - 1 : kernel_h - 1 + height, kernel_w - 1 : kernel_w - 1 + width]


def _separable_gaussian(images: Tensor, sigma: tuple[float, float], truncate: float, padding_mode: str) -> Tensor:
    """scipy-style Gaussian filter over H and W (kernel radius = int(truncate * sigma + 0.5)), by
    kernel size: shifted adds up to ``_SHIFTED_ADDS_TAPS_MAX`` taps, two depthwise 1-D
    convolutions up to ``_SEPARABLE_TAPS_MAX`` taps, FFT beyond.

    For the convolutions every (image, channel) plane is one channel of a channels-last batch of
    one, so the depthwise kernels run vectorised across the planes (one pass per direction)."""
    rows, cols = (_gaussian_kernel1d(s, int(truncate * s + 0.5), images.device) for s in sigma)
    taps = max(len(rows), len(cols))
    if taps > _SEPARABLE_TAPS_MAX:
        return _convolve(images, torch.outer(rows, cols)[None], padding_mode)
    batch, channels, height, width = images.shape
    pad_h, pad_w = len(rows) // 2, len(cols) // 2
    padded = nnf.pad(images, (pad_w, pad_w, pad_h, pad_h), mode=padding_mode)
    if taps <= _SHIFTED_ADDS_TAPS_MAX:
        col_weights, row_weights = cols.tolist(), rows.tolist()
        across = padded[..., :width] * col_weights[0]
        for tap, weight in enumerate(col_weights[1:], start=1):
            across.add_(padded[..., tap : tap + width], alpha=weight)
        out = across[..., :height, :] * row_weights[0]
        for tap, weight in enumerate(row_weights[1:], start=1):
            out.add_(across[..., tap : tap + height, :], alpha=weight)
        return out
    planes = padded.view(1, batch * channels, *padded.shape[-2:]).contiguous(memory_format=torch.channels_last)
    groups = batch * channels
    across = nnf.conv2d(planes, cols.to(images.dtype).view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    out = nnf.conv2d(across, rows.to(images.dtype).view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    return out.view(batch, channels, height, width).contiguous()


def _resample(images: Tensor, theta: Tensor, mode: str = "bilinear") -> Tensor:
    """Sample each image at ``theta`` [B,2,3] (output -> input, normalised coords); outside = 0."""
    grid = nnf.affine_grid(theta, list(images.shape), align_corners=False)
    return nnf.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def _blend_where(images: Tensor, region: Tensor, fill: float, opacity: float = 1.0) -> Tensor:
    """Blend ``region`` (bool [B,H,W]) of each image towards the grey level ``fill``."""
    weight = region.unsqueeze(1).to(images.dtype) * opacity
    return torch.lerp(images, torch.full((), fill, dtype=images.dtype, device=images.device), weight)


@_family("noise", {"sigma": (0.08, 0.12, 0.18, 0.26, 0.38)}, imagecorruptions_name="gaussian_noise")
def _gaussian_noise(images: Tensor, seeds: Tensor, *, sigma: float) -> Tensor:
    """Additive Gaussian noise of standard deviation ``sigma`` (ImageNet-C: 0.08, 0.12, 0.18, 0.26, 0.38)."""
    noise = _normal(seeds, tuple(images.shape[1:]), stream=1).to(images.dtype)
    return torch.add(images, noise, alpha=sigma, out=noise)


_POISSON_UNIFORM_BITS = 12


_POISSON_LEVELS = 255


@functools.lru_cache(maxsize=32)
def _poisson_quantiles(photons: float, device: torch.device) -> Tensor:
    """Poisson quantile table [256 * 2**12] (int16): rate = photons * level / 255, uniform-bin midpoints."""
    rates = torch.arange(_POISSON_LEVELS + 1, dtype=torch.float64) * (photons / _POISSON_LEVELS)
    counts = torch.arange(int(photons + 12 * math.sqrt(photons) + 12), dtype=torch.float64)
    cdf = torch.special.gammaincc(counts + 1, rates[:, None]).contiguous()
    bins = 2**_POISSON_UNIFORM_BITS
    uniforms = ((torch.arange(bins, dtype=torch.float64) + 0.5) / bins).expand(len(rates), bins).contiguous()
    quantiles = torch.searchsorted(cdf, uniforms).clamp_(max=len(counts) - 1)
    return quantiles.to(torch.int16).flatten().to(device)


@_family("noise", {"photons": (60, 25, 12, 5, 3)}, imagecorruptions_name="shot_noise")
def _shot_noise(images: Tensor, seeds: Tensor, *, photons: float) -> Tensor:
    """Poisson (shot) noise: Poisson(x * photons) / photons (ImageNet-C photons: 60, 25, 12, 5, 3;
    photons in (0, 10000]: beyond, the noise is invisible in 8-bit images and the table large).

    Sampled by inverse-CDF lookup: the rate is dithered to 8-bit levels (unbiased) and the
    uniform quantised to 12 bits, so outcome probabilities are exact to about 2e-4.
    """
    bits = _random_bits(seeds, images[0].numel(), stream=2).view_as(images)
    dither = ((bits >> _POISSON_UNIFORM_BITS) & 0xFFFFF).float().mul_(2.0**-20)
    levels = images.clamp(0, 1).mul(_POISSON_LEVELS).add_(dither).floor_().to(torch.int32)
    index = levels * 2**_POISSON_UNIFORM_BITS + (bits & (2**_POISSON_UNIFORM_BITS - 1))
    counts = _poisson_quantiles(float(photons), images.device).index_select(0, index.reshape(-1))
    return counts.view(images.shape).to(images.dtype).div_(photons)


@_family("noise", {"amount": (0.03, 0.06, 0.09, 0.17, 0.27)}, imagecorruptions_name="impulse_noise")
def _impulse_noise(images: Tensor, seeds: Tensor, *, amount: float) -> Tensor:
    """Salt-and-pepper noise: each channel value becomes 0 or 1 (even odds) with probability ``amount``.

    ImageNet-C amount: 0.03, 0.06, 0.09, 0.17, 0.27 (15-bit resolution).
    """
    halves = _random_halves(seeds, images[0].numel(), stream=3).view(images.shape)
    flipped = (halves >> 1) < round(amount * 2**15)
    return torch.where(flipped, halves.bitwise_and_(1).to(images.dtype), images)


@_family("blur", {"sigma": (1, 2, 3, 4, 6)}, imagecorruptions_name="gaussian_blur")
def _gaussian_blur(images: Tensor, seeds: Tensor, *, sigma: float) -> Tensor:
    """Gaussian blur, ``sigma`` in pixels at 224 px (ImageNet-C: 1, 2, 3, 4, 6; 0 = none); edges replicated."""
    scaled = sigma * _pixel_scale(images)
    if scaled == 0:
        return images.clone()
    return _separable_gaussian(images, (scaled, scaled), truncate=4.0, padding_mode="replicate")


def _disk_kernel(radius: float, alias_blur: float, device: torch.device) -> Tensor:
    """ImageNet-C's defocus kernel: a disk on a grid of half-width max(8, radius), softened by a
    3x3 (radius <= 8) or 5x5 Gaussian of sigma ``alias_blur``, reflect-101 borders."""
    half = max(8, math.ceil(radius))
    offsets = torch.arange(-half, half + 1, dtype=torch.float32, device=device)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).float()
    disk = disk / disk.sum()
    alias_radius = 1 if radius <= 8 else 2
    alias = _gaussian_kernel1d(alias_blur, alias_radius, device)
    padded = nnf.pad(disk[None, None], (alias_radius,) * 4, mode="reflect")
    smoothed = nnf.conv2d(nnf.conv2d(padded, alias.view(1, 1, 1, -1)), alias.view(1, 1, -1, 1))
    return smoothed[0]


@_family(
    "blur",
    {"radius": (3, 4, 6, 8, 10), "alias_blur": (0.1, 0.5, 0.5, 0.5, 0.5)},
    imagecorruptions_name="defocus_blur",
)
def _defocus_blur(images: Tensor, seeds: Tensor, *, radius: float, alias_blur: float) -> Tensor:
    """Defocus: convolution with a disk of ``radius`` pixels at 224 px, anti-aliased by a Gaussian
    of sigma ``alias_blur`` (ImageNet-C radius: 3, 4, 6, 8, 10; alias_blur: 0.1, 0.5, 0.5, 0.5, 0.5)."""
    kernel = _disk_kernel(radius * _pixel_scale(images), alias_blur, images.device)
    return _convolve(images, kernel, padding_mode="reflect")


def _motion_kernels(angles: Tensor, radius: int, sigma: float) -> tuple[Tensor, tuple[int, int]]:
    """ImageNet-C motion kernels for angles (degrees) in [-45, 45]: w = 2 radius + 1 one-sided
    Gaussian taps (sigma in taps) at integer offsets along each angle. Returns kernels
    [B, 2a + 1, w] (a = the largest row offset) and the index of offset (0, 0)."""
    width = 2 * radius + 1
    taps = torch.arange(width, dtype=torch.float32, device=angles.device)
    weights = torch.exp(-0.5 * (taps / sigma) ** 2)
    weights = weights / weights.sum()
    radians = torch.deg2rad(angles)[:, None]
    # tap i moves by (-ceil(i sin - 0.5), -ceil(i cos - 0.5)): columns -(w - 1)..0, rows within +-a
    reach = math.ceil((width - 1) * math.sin(math.pi / 4))
    rows = reach - torch.ceil(taps * torch.sin(radians) - 0.5).long()
    cols = width - 1 - torch.ceil(taps * torch.cos(radians) - 0.5).long()
    at_rows = nnf.one_hot(rows, 2 * reach + 1).to(weights.dtype)
    at_cols = nnf.one_hot(cols, width).to(weights.dtype)
    kernels = torch.einsum("t,btr,btc->brc", weights, at_rows, at_cols)  # taps that coincide add up
    return kernels, (reach, width - 1)


@_family("blur", {"radius": (10, 15, 15, 15, 20), "sigma": (3, 5, 8, 12, 15)}, imagecorruptions_name="motion_blur")
def _motion_blur(images: Tensor, seeds: Tensor, *, radius: float, sigma: float) -> Tensor:
    """Motion blur: 2 radius + 1 one-sided Gaussian taps (``sigma`` in taps) along a random angle
    in [-45, 45] degrees per image; pixel values at 224 px (ImageNet-C radius: 10, 15, 15, 15, 20;
    sigma: 3, 5, 8, 12, 15); edges replicated."""
    scale = _pixel_scale(images)
    angles = 90 * _uniform(seeds, (1,), stream=4)[:, 0] - 45
    kernels, centre = _motion_kernels(angles, max(1, round(radius * scale)), sigma * scale)
    return _convolve(images, kernels, padding_mode="replicate", centre=centre)


@_family("photometric", {"delta": (0.1, 0.2, 0.3, 0.4, 0.5)}, imagecorruptions_name="brightness")
def _brightness(images: Tensor, seeds: Tensor, *, delta: float) -> Tensor:
    """Adds ``delta`` to the HSV value channel, clipped to 1 (ImageNet-C: 0.1, 0.2, 0.3, 0.4, 0.5).

    At fixed hue and saturation RGB is proportional to value, so this scales each pixel.
    """
    value = images.amax(dim=1, keepdim=True)
    brighter = (value + delta).clamp(max=1.0)
    black = value == 0  # hue and saturation 0: grey at the new value
    return torch.addcmul(black * brighter, images, brighter / value.masked_fill(black, 1.0))


@_family("photometric", {"factor": (0.4, 0.3, 0.2, 0.1, 0.05)}, imagecorruptions_name="contrast")
def _contrast(images: Tensor, seeds: Tensor, *, factor: float) -> Tensor:
    """Scales each channel's deviation from its image mean by ``factor`` (ImageNet-C: 0.4, 0.3, 0.2, 0.1, 0.05)."""
    return torch.lerp(images.mean(dim=(2, 3), keepdim=True), images, factor)


@_family(
    "photometric",
    {"factor": (1.5, 2, 5, 10, 20), "offset": (0, 0, 0.1, 0.15, 0.2)},
    imagecorruptions_name="saturate",
)
def _saturate(images: Tensor, seeds: Tensor, *, factor: float, offset: float) -> Tensor:
    """HSV saturation S -> clip(S * factor + offset, 0, 1): factor 1.5, 2, 5, 10, 20; offset 0, 0,
    0.1, 0.15, 0.2. Grey pixels get hue 0 (red) as in scikit-image.

    ImageNet-C's saturate (factor 0.3, 0.1, 2, 5, 20; offset 0, 0, 0, 0.1, 0.2) desaturates at
    severities 1-2 and oversaturates at 3-5, so its strength is not monotone in severity. The
    defaults keep its severities 3-5 (as 2, 3, 5 here) on a monotone oversaturation scale;
    desaturation is the ``grayscale`` family. ``config/perturbation/imagenet_c.yaml`` restores
    ImageNet-C's values.
    """
    value = images.amax(dim=1, keepdim=True)
    spread = value - images.amin(dim=1, keepdim=True)
    grey = spread == 0
    saturation = spread / value.masked_fill(grey, 1.0)
    target = (saturation * factor + offset).clamp_(0.0, 1.0)
    # at fixed hue and value, channels move affinely: x -> value + (x - value) * target / saturation
    gain = (target / saturation).masked_fill_(grey, 1.0)
    out = torch.addcmul(value * (1 - gain), images, gain)
    out[:, 1:].sub_(grey * value * target)  # grey pixels take hue 0: (v, v (1 - s'), v (1 - s'))
    return out


@_family("digital", {"quality": (25, 18, 15, 10, 7)}, imagecorruptions_name="jpeg_compression", reads_bytes=True)
def _jpeg_compression(images: Tensor, seeds: Tensor, *, quality: float) -> Tensor:
    """JPEG round trip at ``quality`` (ImageNet-C: 25, 18, 15, 10, 7; whole numbers 1..100) through
    torchvision's batched ``encode_jpeg``/``decode_jpeg``: libjpeg on the CPU (bit-identical to
    PIL's encoder used by imagecorruptions), nvJPEG for CUDA tensors. Encodes 8-bit images as they
    are (the embedding step hands over the decoded bytes), [0, 1] floats rounded to 8 bits."""
    from torchvision.io import decode_jpeg, encode_jpeg

    if images.dtype == torch.uint8:
        pixels = images
    else:  # 255 x + 0.5 truncated is 255 x rounded; written interleaved (H, W, 3), as libjpeg reads them
        batch, _, height, width = images.shape
        pixels = torch.empty(batch, height, width, 3, dtype=torch.uint8, device=images.device).permute(0, 3, 1, 2)
        pixels.copy_(torch.add(images.new_tensor(0.5), images, alpha=255).clamp_(0, 255))
    if pixels.is_cuda:  # nvJPEG reads planar (C, H, W) memory
        pixels = pixels.contiguous()
    encoded = encode_jpeg(list(pixels), quality=int(quality))
    decoded = decode_jpeg([data.cpu() for data in encoded], device=images.device)
    return unit_pixels(torch.stack([image.permute(1, 2, 0) for image in decoded]).permute(0, 3, 1, 2))


def _bin_means(rows: Tensor, length: int, size: int) -> Tensor:
    """PIL's BOX resize over rows: ``rows`` [G * length, D] (G blocks of ``length`` rows) -> [G * size, D],
    output row i of a block the mean of its rows floor(i s + 0.5) .. floor((i + 1) s + 0.5) - 1,
    s = length / size (size <= length), in one pass (``embedding_bag``)."""
    blocks = rows.shape[0] // length
    starts = torch.floor(torch.arange(size, dtype=torch.float64) * (length / size) + 0.5).long().to(rows.device)
    offsets = (starts + length * torch.arange(blocks, device=rows.device)[:, None]).flatten()
    return nnf.embedding_bag(torch.arange(rows.shape[0], device=rows.device), rows, offsets, mode="mean")


@_family("digital", {"factor": (0.6, 0.5, 0.4, 0.3, 0.25)}, imagecorruptions_name="pixelate")
def _pixelate(images: Tensor, seeds: Tensor, *, factor: float) -> Tensor:
    """Area pooling to ``factor`` of the size with PIL's BOX bins, then nearest upsampling
    (ImageNet-C: 0.6, 0.5, 0.4, 0.3, 0.25; factor in (0, 1])."""
    batch, channels, height, width = images.shape
    planes = batch * channels
    small_h, small_w = max(1, int(height * factor)), max(1, int(width * factor))
    tall = _bin_means(images.reshape(planes * height, width), height, small_h)  # rows pooled: [planes * small_h, W]
    columns = tall.view(planes, small_h, width).transpose(1, 2).reshape(planes * width, small_h)
    small = _bin_means(columns, width, small_w).view(batch, channels, small_w, small_h).transpose(-1, -2)
    return nnf.interpolate(small, size=(height, width), mode="nearest-exact")


@_family("digital", {"alpha": (12.5, 16.25, 21.25, 25.0, 30.0)}, imagecorruptions_name="elastic_transform")
def _elastic_transform(images: Tensor, seeds: Tensor, *, alpha: float) -> Tensor:
    """Elastic warp as in imagecorruptions: per-pixel displacements uniform in +-0.005 H, smoothed by
    a Gaussian of sigma 0.01 (H, W), times ``alpha`` (12.5, 16.25, 21.25, 25, 30); bilinear,
    mirrored edges."""
    height, width = images.shape[-2:]
    max_shift = 0.005 * height
    noise = (2 * _uniform(seeds, (2, height, width), stream=5) - 1) * max_shift
    shifts = alpha * _separable_gaussian(noise, (0.01 * height, 0.01 * width), truncate=3.0, padding_mode="reflect")
    rows = torch.arange(height, dtype=images.dtype, device=images.device)[:, None]
    cols = torch.arange(width, dtype=images.dtype, device=images.device)[None, :]
    grid = torch.stack([(2 * (cols + shifts[:, 0]) + 1) / width - 1, (2 * (rows + shifts[:, 1]) + 1) / height - 1], dim=-1)
    return nnf.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _plasma_fractal(seeds: Tensor, size: int, decay: float) -> Tensor:
    """Diamond-square height maps [B, size, size] in [0, 1] (size a power of two), as ImageNet-C's fog:
    midpoints get the mean of their 4 neighbours (wrapping) plus uniform noise in +-w^2, with
    w = 100 divided by ``decay`` at each halving of the step."""
    heights = torch.zeros(len(seeds), size, size, device=seeds.device)
    draws = _uniform(seeds, (size * size,), stream=100).mul_(2).sub_(1)  # 3 n^2 per step, n = 1, 2, 4, ...
    step, wibble, used = size, 100.0, 0
    while step >= 2:
        half, cells = step // 2, size // step
        noise = draws[:, used : used + 3 * cells * cells].view(-1, 3, cells, cells) * wibble**2
        used += 3 * cells * cells
        corners = heights[:, ::step, ::step]
        square_sum = corners + corners.roll(-1, dims=1)
        heights[:, half::step, half::step] = (square_sum + square_sum.roll(-1, dims=2)) / 4 + noise[:, 0]
        centres = heights[:, half::step, half::step]
        heights[:, ::step, half::step] = (centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)) / 4 + noise[
            :, 1
        ]
        heights[:, half::step, ::step] = (centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)) / 4 + noise[
            :, 2
        ]
        step, wibble = half, wibble / decay
    lowest = heights.amin(dim=(1, 2), keepdim=True)
    return (heights - lowest) / (heights.amax(dim=(1, 2), keepdim=True) - lowest)


@_family("weather", {"strength": (1.5, 2.0, 2.5, 2.5, 3.0), "decay": (2.0, 2.0, 1.7, 1.5, 1.4)}, imagecorruptions_name="fog")
def _fog(images: Tensor, seeds: Tensor, *, strength: float, decay: float) -> Tensor:
    """Fog: adds ``strength`` x a plasma fractal whose roughness falls with ``decay``, then rescales by
    max / (max + strength) (ImageNet-C strength: 1.5, 2, 2.5, 2.5, 3; decay: 2, 2, 1.7, 1.5, 1.4)."""
    height, width = images.shape[-2:]
    size = 1 << (max(height, width) - 1).bit_length()
    fog = _plasma_fractal(seeds, size, decay)[:, None, :height, :width].to(images.dtype)
    brightest = images.amax(dim=(1, 2, 3), keepdim=True)
    return torch.add(images, fog, alpha=strength).mul_(brightest / (brightest + strength))


def _random_signs(seeds: Tensor, stream: int) -> Tensor:
    """-1.0 or 1.0 per image, even odds."""
    return torch.where(_uniform(seeds, (1,), stream)[:, 0] < 0.5, -1.0, 1.0)


@_family("geometric", {"degrees": (5, 10, 15, 20, 30)})
def _rotation(images: Tensor, seeds: Tensor, *, degrees: float) -> Tensor:
    """Rotation about the centre by ``degrees`` (5, 10, 15, 20, 30), direction random per image;
    bilinear, corners filled with 0."""
    height, width = images.shape[-2:]
    radians = math.radians(degrees) * _random_signs(seeds, stream=6).to(images)
    cos, sin, zero = torch.cos(radians), torch.sin(radians), torch.zeros_like(radians)
    theta = torch.stack(
        [torch.stack([cos, -sin * height / width, zero], 1), torch.stack([sin * width / height, cos, zero], 1)], 1
    )
    return _resample(images, theta)


@_family("geometric", {"scale": (0.9, 0.75, 0.6, 0.45, 0.3)})
def _zoom(images: Tensor, seeds: Tensor, *, scale: float) -> Tensor:
    """Zoom out: the image shrinks to ``scale`` of its size (0.9, 0.75, 0.6, 0.45, 0.3), antialiased,
    centred on a black (0) canvas."""
    import torchvision.transforms.v2.functional as tvf

    height, width = images.shape[-2:]
    small_h, small_w = max(1, round(height * scale)), max(1, round(width * scale))
    small = tvf.resize(images, [small_h, small_w], antialias=True)
    top, left = (height - small_h) // 2, (width - small_w) // 2
    return nnf.pad(small, (left, width - small_w - left, top, height - small_h - top))


@_family("geometric", {"shift": (0.05, 0.1, 0.2, 0.3, 0.4)})
def _translation(images: Tensor, seeds: Tensor, *, shift: float) -> Tensor:
    """Shift by ``shift`` x the image size (0.05, 0.1, 0.2, 0.3, 0.4) in a random direction per image,
    rounded to whole pixels; uncovered area 0."""
    height, width = images.shape[-2:]
    direction = 2 * math.pi * _uniform(seeds, (1,), stream=7)[:, 0].to(images)
    rows = torch.round(shift * height * torch.sin(direction)) * (2 / height)
    cols = torch.round(shift * width * torch.cos(direction)) * (2 / width)
    one, zero = torch.ones_like(rows), torch.zeros_like(rows)
    theta = torch.stack([torch.stack([one, zero, -cols], 1), torch.stack([zero, one, -rows], 1)], 1)
    return _resample(images, theta, mode="nearest")


@_family("geometric", {"fraction": (0.9, 0.75, 0.6, 0.45, 0.3)})
def _crop(images: Tensor, seeds: Tensor, *, fraction: float) -> Tensor:
    """Random crop keeping ``fraction`` of each side (0.9, 0.75, 0.6, 0.45, 0.3), resized back
    (bilinear); crop position uniform per image."""
    centres = (1 - fraction) * (2 * _uniform(seeds, (2,), stream=8).to(images) - 1)
    scale = torch.full_like(centres[:, 0], fraction)
    zero = torch.zeros_like(scale)
    theta = torch.stack([torch.stack([scale, zero, centres[:, 0]], 1), torch.stack([zero, scale, centres[:, 1]], 1)], 1)
    return _resample(images, theta)


@_family("occlusion", {"fraction": (0.1, 0.2, 0.3, 0.4, 0.5), "cells": (8,) * 5, "fill": (0.5,) * 5})
def _patch_grid(images: Tensor, seeds: Tensor, *, fraction: float, cells: float, fill: float) -> Tensor:
    """Fills ``fraction`` (0.1, 0.2, 0.3, 0.4, 0.5) of the cells of a ``cells`` x ``cells`` grid (8)
    with grey ``fill`` (0.5); the cells are a random order per image, so a higher severity
    occludes a superset of the cells."""
    height, width = images.shape[-2:]
    cells = int(cells)
    order = _uniform(seeds, (cells * cells,), stream=9).argsort(dim=1, stable=True).argsort(dim=1, stable=True)
    occluded = (order < round(fraction * cells * cells)).view(-1, cells, cells)
    row_cells = torch.arange(height, device=images.device) * cells // height
    col_cells = torch.arange(width, device=images.device) * cells // width
    return _blend_where(images, occluded[:, row_cells][:, :, col_cells], fill)


@_family("occlusion", {"size": (0.2, 0.3, 0.4, 0.5, 0.6), "fill": (0.5,) * 5})
def _cutout(images: Tensor, seeds: Tensor, *, size: float, fill: float) -> Tensor:
    """Fills one square of side ``size`` x min(H, W) (0.2, 0.3, 0.4, 0.5, 0.6) with grey ``fill`` (0.5),
    at a uniform position inside the image per image."""
    height, width = images.shape[-2:]
    side = round(size * min(height, width))
    corner = _uniform(seeds, (2,), stream=10)
    top = (corner[:, 0] * (height - side + 1)).floor()[:, None, None]
    left = (corner[:, 1] * (width - side + 1)).floor()[:, None, None]
    rows = torch.arange(height, device=images.device)[None, :, None]
    cols = torch.arange(width, device=images.device)[None, None, :]
    region = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return _blend_where(images, region, fill)


@_family("occlusion", {"opacity": (0.2, 0.4, 0.6, 0.8, 1.0), "fill": (0.5,) * 5}, needs_mask=True)
def _object_mask(images: Tensor, seeds: Tensor, *, opacity: float, fill: float, masks: Tensor) -> Tensor:
    """Blends the object (mask True) towards grey ``fill`` (0.5) with ``opacity`` (0.2, 0.4, 0.6, 0.8, 1);
    needs masks."""
    return _blend_where(images, masks, fill, opacity)


@_family("occlusion", {"opacity": (0.2, 0.4, 0.6, 0.8, 1.0), "fill": (0.5,) * 5}, needs_mask=True)
def _background_mask(images: Tensor, seeds: Tensor, *, opacity: float, fill: float, masks: Tensor) -> Tensor:
    """Blends the background (mask False) towards grey ``fill`` (0.5) with ``opacity`` (0.2, 0.4, 0.6,
    0.8, 1); needs masks."""
    return _blend_where(images, ~masks, fill, opacity)


@_family("colour", {"strength": (0.2, 0.4, 0.6, 0.8, 1.0)})
def _grayscale(images: Tensor, seeds: Tensor, *, strength: float) -> Tensor:
    """Blends towards the luma grayscale image with ``strength`` (0.2, 0.4, 0.6, 0.8, 1)."""
    import torchvision.transforms.v2.functional as tvf

    return tvf.adjust_saturation(images, 1.0 - strength)


@_family("colour", {"shift": (0.05, 0.1, 0.2, 0.3, 0.5)})
def _hue_shift(images: Tensor, seeds: Tensor, *, shift: float) -> Tensor:
    """Rotates the HSV hue by ``shift`` turns (0.05, 0.1, 0.2, 0.3, 0.5; at most 0.5)."""
    import torchvision.transforms.v2.functional as tvf

    return tvf.adjust_hue(images, shift)


@_family("colour", {"threshold": (0.8, 0.6, 0.4, 0.2, 0.0)})
def _invert(images: Tensor, seeds: Tensor, *, threshold: float) -> Tensor:
    """Colour inversion of the channel values >= ``threshold`` (0.8, 0.6, 0.4, 0.2, 0), i.e. solarisation;
    severity 5 inverts the whole image."""
    import torchvision.transforms.v2.functional as tvf

    return tvf.solarize(images, threshold)
