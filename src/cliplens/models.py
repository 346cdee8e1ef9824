"""Loading CLIP models: open_clip names + pretrained tags, local checkpoints, tiny random models.

Every model comes back as a :class:`LoadedModel`, which bundles the open_clip module with its
tokenizer, the preprocessing it expects and a provenance record for the Parquet metadata.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import build_model_from_openai_state_dict
from torchvision.transforms.v2 import functional as TF

from cliplens.architectures import MODEL_CONFIG_DIR
from cliplens.config import ConfigError
from cliplens.download import sha256_of
from cliplens.runtime import resolve_device
from cliplens.weights import WeightsUnavailableError, ensure_weights

log = logging.getLogger(__name__)

TINY_ARCHS = {"vit": "cliplens-tiny-vit", "resnet": "cliplens-tiny-rn"}
SOURCES = ("open_clip", "checkpoint", "random", "planted")
"""``planted``: an open_clip-format checkpoint that the workflow trains itself (rule train_planted_model)."""
CHECKPOINT_FORMATS = ("auto", "open_clip", "openai")
PRECISIONS = ("fp32", "fp16", "bf16")

open_clip.add_model_config(MODEL_CONFIG_DIR)


@dataclass
class LoadedModel:
    """An open_clip model ready for inference, with what is needed to feed it."""

    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    precision: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def embed_dim(self) -> int:
        """Dimension of the joint image-text embedding."""
        return int(cast(Any, self.model).visual.output_dim)  # open_clip towers are untyped

    @property
    def is_random(self) -> bool:
        """True when the weights are random: figures made with them must say so."""
        return bool(self.provenance.get("random_weights"))

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the configured precision (a no-op for fp32 and on CPU)."""
        return autocast(self.device, self.precision)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """fp16/bf16 autocast on CUDA; fp32 (no autocast) elsewhere."""
    if precision == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type="cuda", dtype=dtype)


def create_tiny_clip(kind: str = "vit", seed: int = 0, image_size: int | None = None) -> torch.nn.Module:
    """A small randomly initialised open_clip CLIP (ViT or ModifiedResNet), seeded, in eval mode.

    The ViT variant has 4 layers of 4 heads (width 256, patch 32); both use OpenAI-compatible
    shapes so that they round-trip through an OpenAI-format state dict.
    """
    if kind not in TINY_ARCHS:
        raise ValueError(f"tiny model kind {kind!r} unknown; valid: {sorted(TINY_ARCHS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_ARCHS[kind], pretrained=None, force_image_size=image_size)
    return model.eval()


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike, fmt: str = "open_clip") -> Path:
    """Save a CLIP state dict in open_clip format or in OpenAI format (plain state dict, fp16)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if fmt == "openai":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        state["input_resolution"] = torch.tensor(cast(Any, model).visual.image_size[0])
    elif fmt != "open_clip":
        raise ValueError(f"checkpoint format {fmt!r} unknown; valid: ['open_clip', 'openai']")
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def _load_openai_checkpoint(path: Path, trust_torchscript: bool) -> torch.nn.Module:
    if _is_torchscript_archive(path):
        if not trust_torchscript:
            raise ValueError(
                f"{path} is a TorchScript archive (the format of OpenAI's released .pt files). "
                "Loading it runs code from the file; set model.trust_torchscript=true if you trust it."
            )
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = build_model_from_openai_state_dict(state, cast_dtype=None)
    return model.float().eval()


def _detect_format(path: Path) -> str:
    if _is_torchscript_archive(path):
        return "openai"
    if path.suffix == ".safetensors":
        return "open_clip"
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    # OpenAI state dicts carry input_resolution or keep fp16 weights
    stem = state.get("visual.conv1.weight")  # absent from open_clip models with a timm trunk
    if "input_resolution" in state or (stem is not None and stem.dtype == torch.float16):
        return "openai"
    return "open_clip"


@contextlib.contextmanager
def _root_logging_silenced() -> Iterator[None]:
    """Drop what is logged through the root logger meanwhile (and keep it from configuring itself)."""
    root = logging.getLogger()
    handler, disabled = logging.NullHandler(), logging.root.manager.disable
    root.addHandler(handler)
    logging.disable(max(disabled, logging.WARNING))
    try:
        yield
    finally:
        logging.disable(disabled)
        root.removeHandler(handler)


def checkpoint_mismatch(cfg: Mapping[str, Any], error: BaseException) -> ConfigError:
    """The error of an open_clip-format checkpoint that does not fit ``model.arch``."""
    return ConfigError(
        f"model.checkpoint={cfg['checkpoint']!r} does not fit model.arch={cfg['arch']!r} "
        f"({type(error).__name__}: {str(error).strip() or 'shapes differ'}); set model__arch to the open_clip "
        "architecture the checkpoint was trained with (`cliplens list models` names cliplens's own, "
        "`python -c 'import open_clip; print(open_clip.list_models())'` all of them)"
    )


def check_checkpoint_fits(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` when a checkpoint model's file cannot be loaded into ``model.arch``.

    The architecture is built on the meta device (no memory, no initialisation) and the file is loaded
    into it with open_clip's own loader, so the check accepts exactly what a job would. OpenAI-format
    files carry their architecture and are not checked; a file that cannot be read is named as such.
    """
    path = Path(cfg["checkpoint"]).expanduser()
    fmt = cfg.get("checkpoint_format", "auto")
    try:
        fmt = _detect_format(path) if fmt == "auto" else fmt
    except Exception as error:  # unpickling, zip and I/O errors come in many types
        raise ConfigError(
            f"model.checkpoint={cfg['checkpoint']!r} cannot be read as a checkpoint ({type(error).__name__}: {error})"
        ) from error
    if fmt == "openai":
        return
    # open_clip's "initialized randomly" is true but beside the point here
    with _root_logging_silenced(), torch.device("meta"):
        skeleton = open_clip.create_model(cfg["arch"], pretrained=None, device="meta")
    with warnings.catch_warnings():  # copying into meta tensors is a no-op, as intended here
        warnings.simplefilter("ignore", UserWarning)
        try:
            open_clip.load_checkpoint(skeleton, str(path), weights_only=True)
        except (AssertionError, RuntimeError, KeyError) as error:
            raise checkpoint_mismatch(cfg, error) from error


def build_module(cfg: Mapping[str, Any]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the open_clip module a model config describes, with its provenance record."""
    source = cfg["source"]
    provenance: dict[str, Any] = {"model": cfg["name"], "arch": cfg["arch"], "source": source}
    if source == "random":
        kind = {v: k for k, v in TINY_ARCHS.items()}.get(cfg["arch"])
        if kind is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg["seed"])
                module = open_clip.create_model(cfg["arch"], pretrained=None).eval()
        else:
            module = create_tiny_clip(kind, seed=cfg["seed"])
        provenance.update(random_weights=True, seed=cfg["seed"])
        return module, provenance
    if source == "planted":
        path = Path(cfg["checkpoint"])
        if not path.is_file():
            raise WeightsUnavailableError(f"{path} does not exist: the workflow's rule train_planted_model writes it")
        module = open_clip.create_model(cfg["arch"], pretrained=str(path), weights_only=True)
        provenance.update(checkpoint=str(path), checkpoint_format="open_clip", checkpoint_sha256=sha256_of(path))
        provenance["random_weights"] = False
        return module.eval(), provenance
    weights = ensure_weights(cfg)
    if source == "checkpoint":
        assert weights is not None  # ensure_weights returns a path for checkpoints
        path = Path(weights)
        fmt = cfg.get("checkpoint_format", "auto")
        fmt = _detect_format(path) if fmt == "auto" else fmt
        if fmt == "openai":
            module = _load_openai_checkpoint(path, cfg.get("trust_torchscript", False))
        else:
            try:
                module = open_clip.create_model(cfg["arch"], pretrained=str(path), weights_only=True)
            except (AssertionError, RuntimeError, KeyError) as error:
                raise checkpoint_mismatch(cfg, error) from error
        provenance.update(checkpoint=str(path), checkpoint_format=fmt, checkpoint_sha256=sha256_of(path))
    else:
        module = open_clip.create_model(cfg["arch"], pretrained=weights, weights_only=True, cache_dir=cfg.get("cache_dir"))
        provenance.update(pretrained=cfg["pretrained"])
    provenance["random_weights"] = False
    return module.eval(), provenance


def load_model(cfg: Mapping[str, Any], device_name: str | None = None) -> LoadedModel:
    """Load the model a resolved ``model`` config section describes, on ``device_name`` (default: the
    section's ``device``; workflow jobs pass it apart, as a resource, so that it reruns nothing)."""
    device = resolve_device(device_name or cfg.get("device", "auto"))
    precision = cfg.get("precision", "fp32")
    if precision != "fp32" and device.type != "cuda":
        log.warning("precision %s needs CUDA; running in fp32 on %s", precision, device)
        precision = "fp32"
    module, provenance = build_module(cfg)
    module = module.to(device)
    module.requires_grad_(False)
    preprocess = open_clip.get_model_preprocess_cfg(module)
    size = preprocess["size"]
    provenance.update(
        open_clip_version=open_clip.__version__,
        torch_version=torch.__version__,
        preprocess={**preprocess, "size": size},
        device=str(device),
        precision=precision,
    )
    return LoadedModel(
        model=module,
        tokenizer=open_clip.get_tokenizer(cfg["arch"]),
        image_size=size if isinstance(size, int) else size[0],
        mean=tuple(preprocess["mean"]),
        std=tuple(preprocess["std"]),
        device=device,
        precision=precision,
        provenance=provenance,
    )


def encode_pixels(loaded: LoadedModel, pixels: torch.Tensor) -> torch.Tensor:
    """L2-normalised image embeddings (float32) of [0,1] pixels, normalised with the model's mean/std."""
    with inference_mode(loaded):
        features = cast(Any, loaded.model).encode_image(TF.normalize(pixels, loaded.mean, loaded.std))
    return F.normalize(features.float(), dim=-1)


@contextlib.contextmanager
def inference_mode(loaded: LoadedModel) -> Iterator[None]:
    """No-grad inference with the configured autocast."""
    with torch.inference_mode(), loaded.autocast():
        yield
