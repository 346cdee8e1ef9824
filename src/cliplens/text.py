"""Prompt templates, text encoding (each text encoded once, in batches) and text-embedding files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import open_clip
import pyarrow as pa
import torch
import torch.nn.functional as F

from cliplens.io import EmbeddingWriter, embedding_schema
from cliplens.models import LoadedModel, inference_mode

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "openai_imagenet": tuple(t("{}") for t in open_clip.OPENAI_IMAGENET_TEMPLATES),
    "simple": tuple(t("{}") for t in open_clip.SIMPLE_IMAGENET_TEMPLATES),
    "single": ("a photo of a {}.",),
    "none": ("{}",),
    # CLIP Surgery (Li et al.): the 80 OpenAI ImageNet templates in the reference's order,
    # plus 5 scene templates ("... in the scene.") for objects within larger scenes.
    "clip_surgery": (
        "a bad photo of a {}.",
        "a photo of many {}.",
        "a sculpture of a {}.",
        "a photo of the hard to see {}.",
        "a low resolution photo of the {}.",
        "a rendering of a {}.",
        "graffiti of a {}.",
        "a bad photo of the {}.",
        "a cropped photo of the {}.",
        "a tattoo of a {}.",
        "the embroidered {}.",
        "a photo of a hard to see {}.",
        "a bright photo of a {}.",
        "a photo of a clean {}.",
        "a photo of a dirty {}.",
        "a dark photo of the {}.",
        "a drawing of a {}.",
        "a photo of my {}.",
        "the plastic {}.",
        "a photo of the cool {}.",
        "a close-up photo of a {}.",
        "a black and white photo of the {}.",
        "a painting of the {}.",
        "a painting of a {}.",
        "a pixelated photo of the {}.",
        "a sculpture of the {}.",
        "a bright photo of the {}.",
        "a cropped photo of a {}.",
        "a plastic {}.",
        "a photo of the dirty {}.",
        "a jpeg corrupted photo of a {}.",
        "a blurry photo of the {}.",
        "a photo of the {}.",
        "a good photo of the {}.",
        "a rendering of the {}.",
        "a {} in a video game.",
        "a photo of one {}.",
        "a doodle of a {}.",
        "a close-up photo of the {}.",
        "a photo of a {}.",
        "the origami {}.",
        "the {} in a video game.",
        "a sketch of a {}.",
        "a doodle of the {}.",
        "a origami {}.",
        "a low resolution photo of a {}.",
        "the toy {}.",
        "a rendition of the {}.",
        "a photo of the clean {}.",
        "a photo of a large {}.",
        "a rendition of a {}.",
        "a photo of a nice {}.",
        "a photo of a weird {}.",
        "a blurry photo of a {}.",
        "a cartoon {}.",
        "art of a {}.",
        "a sketch of the {}.",
        "a embroidered {}.",
        "a pixelated photo of a {}.",
        "itap of the {}.",
        "a jpeg corrupted photo of the {}.",
        "a good photo of a {}.",
        "a plushie {}.",
        "a photo of the nice {}.",
        "a photo of the small {}.",
        "a photo of the weird {}.",
        "the cartoon {}.",
        "art of the {}.",
        "a drawing of the {}.",
        "a photo of the large {}.",
        "a black and white photo of a {}.",
        "the plushie {}.",
        "a dark photo of a {}.",
        "itap of a {}.",
        "graffiti of the {}.",
        "a toy {}.",
        "itap of my {}.",
        "a photo of a cool {}.",
        "a photo of a small {}.",
        "a tattoo of the {}.",
        "there is a {} in the scene.",
        "there is the {} in the scene.",
        "this is a {} in the scene.",
        "this is the {} in the scene.",
        "this is one {} in the scene.",
    ),
}


def expand_prompts(labels: Sequence[str], templates: Sequence[str]) -> list[str]:
    """All template x label prompts, label-major: prompts[c * T + t]."""
    return [template.format(label) for label in labels for template in templates]


def encode_prompts(loaded: LoadedModel, prompts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings (float32, on CPU) of the given prompts, batched."""
    chunks = []
    with inference_mode(loaded):
        for start in range(0, len(prompts), batch_size):
            tokens = loaded.tokenizer(list(prompts[start : start + batch_size])).to(loaded.device)
            chunks.append(F.normalize(cast(Any, loaded.model).encode_text(tokens).float(), dim=-1).cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, loaded.embed_dim)


def encode_labels(loaded: LoadedModel, labels: Sequence[str], templates: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Prompt-ensembled label embeddings [C, D]: mean of normalised template embeddings, renormalised."""
    if not labels:
        return torch.empty(0, loaded.embed_dim)
    per_prompt = encode_prompts(loaded, expand_prompts(labels, templates), batch_size)
    per_label = per_prompt.reshape(len(labels), len(templates), -1).mean(dim=1)
    return F.normalize(per_label, dim=-1)


POOL_FIELDS = [pa.field("text_index", pa.int64()), pa.field("text", pa.string())]


PROPERTY_FIELDS = [pa.field("property", pa.string()), pa.field("text", pa.string())]


def encode_texts(loaded: LoadedModel, texts: Sequence[str], templates: str) -> np.ndarray:
    """Normalised, template-ensembled text embeddings [T, D] (``none``: each text as is)."""
    return encode_labels(loaded, texts, TEMPLATE_SETS[templates]).numpy()


def _write_texts(
    path: str | os.PathLike,
    fields: list[pa.Field],
    columns: Mapping[str, Sequence],
    embeddings: np.ndarray,
    provenance: Mapping[str, Any],
) -> None:
    schema = embedding_schema(fields, embeddings.shape[1], "float32", provenance)
    with EmbeddingWriter(path, schema) as writer:
        writer.write(columns, embeddings)


def write_pool_embeddings(loaded: LoadedModel, texts: Sequence[str], templates: str, path: str | os.PathLike) -> None:
    """Embed a text pool (one row per text, in pool order) into a Parquet file."""
    embeddings = encode_texts(loaded, texts, templates)
    provenance = {**loaded.provenance, "templates": templates}
    _write_texts(path, POOL_FIELDS, {"text_index": range(len(texts)), "text": list(texts)}, embeddings, provenance)


def label_features(loaded: LoadedModel, labels: Sequence[str], templates: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt-ensembled label embeddings [C, D] and the ensembled empty prompt [D] (each text encoded once)."""
    features = encode_labels(loaded, [*labels, ""], TEMPLATE_SETS[templates])
    return features[:-1], features[-1]
