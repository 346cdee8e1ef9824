"""Contrastive training of a small CLIP from scratch, and its zero-shot evaluation by attribute.

Made for the planted-concept world (:mod:`cliplens.planted`): images arrive as uint8 arrays at
the model's input size, captions as strings. Training is seeded and repeats exactly on CPU: the
batches come from a ``torch.Generator`` and the model from :func:`create_planted_clip`'s seed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import open_clip
import pandas as pd
import torch
import torch.nn.functional as F

import cliplens.models  # noqa: F401  (registers the model configs of cliplens with open_clip)
from cliplens.planted import SINGLE_OBJECT_CAPTION, caption

log = logging.getLogger(__name__)

MODEL_NAME = "cliplens-planted-vit"
MAX_LOGIT_SCALE = 100.0
"""CLIP's clamp on the learnable temperature (exp of the logit scale)."""
PROGRESS_SECONDS = 30.0
"""Between evaluations, a progress line (step, loss, training time left) at most this often (training time,
evaluations excluded: the estimate leaves them out too)."""

CAPTION_SLOTS = ("size", "colour", "shape", "position", "background")
"""The attributes a one-object caption names (:data:`cliplens.planted.SINGLE_OBJECT_CAPTION`)."""


def attribute_templates(vocabularies: Mapping[str, Sequence[str]], attribute: str) -> tuple[str, ...]:
    """The zero-shot prompt ensemble of ``attribute``: every one-object caption with that attribute left as ``{}``.

    The other attributes take every combination of their values, so the ensembled class embedding
    of a value (mean of the normalised prompt embeddings) averages over every context the value
    appears in, in the words of the training captions.
    """
    if attribute not in CAPTION_SLOTS:
        raise ValueError(f"attribute: {attribute!r} is invalid; valid values: {list(CAPTION_SLOTS)}")
    others = [slot for slot in CAPTION_SLOTS if slot != attribute]
    return tuple(
        SINGLE_OBJECT_CAPTION.format(**dict(zip(others, values)), **{attribute: "{}"})
        for values in itertools.product(*(vocabularies[slot] for slot in others))
    )


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings: AdamW with linear warm-up then cosine decay to zero."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    seed: int = 0
    eval_every: int = 250
    hard_negatives: tuple[str, ...] = ()
    """Attributes (of :data:`CAPTION_SLOTS`) that each add, per image of a batch, one negative
    caption to the candidates of every image: the image's caption with that attribute of its first
    object (or the background) swapped for another value seen in the training records, as in
    NegCLIP (Yuksekgonul et al., ICLR 2023); a negative equal to a caption of the batch is dropped."""
    paired_attributes: tuple[str, ...] = ("shape",)
    """Attributes (of :data:`CAPTION_SLOTS`) on which batches are paired: half of each batch is
    drawn at random, and each of those images brings a partner whose caption differs from its own
    in exactly one of these attributes (drawn uniformly), so the loss must tell such captions apart."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "eval_every"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}: {value!r} is invalid; valid values: an integer >= 1")
        if self.batch_size < 2:
            raise ValueError(f"batch_size: {self.batch_size!r} is invalid; valid values: an integer >= 2")
        if not isinstance(self.warmup_steps, int) or not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(
                f"warmup_steps: {self.warmup_steps!r} is invalid; valid values: an integer in [0, steps={self.steps}]"
            )
        if not self.lr > 0:
            raise ValueError(f"lr: {self.lr!r} is invalid; valid values: a number > 0")
        for key in ("hard_negatives", "paired_attributes"):
            names = getattr(self, key)
            if not set(names) <= set(CAPTION_SLOTS) or len(set(names)) != len(names):
                raise ValueError(f"{key}: {list(names)!r} is invalid; valid values: distinct names from {list(CAPTION_SLOTS)}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay: {self.weight_decay!r} is invalid; valid values: a number >= 0")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(
                f"device: {self.device!r} is invalid; valid values: a torch device such as 'cpu' or 'cuda:0'"
            ) from error

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainingConfig:
        """A validated config from a plain mapping (e.g. parsed YAML)."""
        fields = sorted(f.name for f in dataclasses.fields(cls))
        for key in values:
            if key not in fields:
                raise ValueError(f"key: {key!r} is invalid; valid values: {fields}")
        lists = ("hard_negatives", "paired_attributes")
        settings: dict[str, Any] = {key: tuple(value) if key in lists else value for key, value in values.items()}
        return cls(**settings)


def create_planted_clip(seed: int = 0) -> tuple[open_clip.CLIP, Callable[[Sequence[str]], torch.Tensor]]:
    """A randomly initialised ``cliplens-planted-vit`` (seeded, global RNG untouched) and its tokenizer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(MODEL_NAME, pretrained=None)
    return model, open_clip.get_tokenizer(MODEL_NAME)


def _pixels(model: open_clip.CLIP, images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, S, S, 3] -> float [B, 3, S, S] on the model's device, normalised like its preprocessing."""
    cfg = open_clip.get_model_preprocess_cfg(model)
    device = model.logit_scale.device
    mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1)
    return (images.to(device).permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def _parameter_groups(model: open_clip.CLIP, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not on gains, biases, embeddings of rank 1 or the logit scale)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def lr_factor(cfg: TrainingConfig, step: int) -> float:
    """Multiplier of ``cfg.lr`` at optimiser step ``step`` (0-based): linear warm-up, then cosine to 0."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    negative_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching (image, text) pairs; texts in
    ``negative_features`` (matching no image) join the candidates of each image only."""
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(len(logits), device=logits.device)
    image_logits = (
        logits if negative_features is None else torch.cat([logits, logit_scale * image_features @ negative_features.T], 1)
    )
    return (F.cross_entropy(image_logits, labels) + F.cross_entropy(logits.T, labels)) / 2


Negatives = Callable[[torch.Tensor, torch.Generator], list[str]]
"""Extra negative captions for a batch (indices into the training set), drawn with the generator."""

Pairing = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""A batch (indices into the training set) made into pairs, drawn with the generator."""


def _with_attribute(scene: Sequence[Mapping[str, Any]], background: str, attribute: str, value: str) -> str:
    """The caption of a planted scene with ``attribute`` of its first object (or the background) set to ``value``."""
    if attribute == "background":
        return caption(scene, value)
    return caption([{**scene[0], attribute: value}, *scene[1:]], background)


def _scenes(records: pd.DataFrame) -> list[tuple[list[dict[str, Any]], str]]:
    """(objects, background) of each planted record."""
    return [(json.loads(text), background) for text, background in zip(records["objects"], records["background"])]


def attribute_swap_negatives(
    records: pd.DataFrame, vocabularies: Mapping[str, Sequence[str]], attributes: Sequence[str]
) -> Negatives:
    """Per attribute and image of a batch, the image's caption with that attribute swapped for a
    uniformly drawn other value: of the first object, or the background (planted ``records``)."""
    scenes = _scenes(records)

    def negatives(batch: torch.Tensor, generator: torch.Generator) -> list[str]:
        captions = []
        for attribute in attributes:
            values = list(vocabularies[attribute])
            shifts = torch.randint(1, len(values), (len(batch),), generator=generator).tolist()
            for index, shift in zip(batch.tolist(), shifts):
                scene, background = scenes[index]
                current = background if attribute == "background" else scene[0][attribute]
                swapped = values[(values.index(current) + shift) % len(values)]
                captions.append(_with_attribute(scene, background, attribute, swapped))
        return captions

    return negatives


def attribute_pairs(records: pd.DataFrame, attributes: Sequence[str]) -> Pairing:
    """Pair a batch: its first half stays, and each of those images is joined by a training image
    whose caption differs from its own in exactly one attribute (drawn uniformly from
    ``attributes``, the others tried in turn; of the first object, or the background) and from
    every caption already in the pairs. An image without such a partner (most two-object images:
    their partner would have to repeat the second object) keeps the image at its place in the
    second half."""
    scenes, captions, names = _scenes(records), records["caption"].tolist(), list(attributes)
    groups = {}  # attribute -> (caption with that attribute blanked per image, blanked caption -> indices)
    for attribute in attributes:
        blanked = [_with_attribute(scene, background, attribute, "_") for scene, background in scenes]
        members: dict[str, list[int]] = {}
        for index, key in enumerate(blanked):
            members.setdefault(key, []).append(index)
        groups[attribute] = (blanked, members)

    def pair(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        half = len(batch) // 2
        anchors, partners = batch[:half].tolist(), batch[half : 2 * half].tolist()
        taken = {captions[index] for index in anchors}  # no caption twice: it would be a false negative
        choices = torch.randint(len(attributes), (half,), generator=generator).tolist()
        draws = torch.rand(half, generator=generator).tolist()
        for slot, (anchor, choice, draw) in enumerate(zip(anchors, choices, draws)):
            for attribute in names[choice:] + names[:choice]:  # the drawn one first, then the others
                blanked, members = groups[attribute]
                others = [index for index in members[blanked[anchor]] if captions[index] not in taken]
                if others:
                    partners[slot] = others[int(draw * len(others))]
                    break
            taken.add(captions[partners[slot]])
        return torch.tensor(anchors + partners + batch[2 * half :].tolist())

    return pair


def train_clip(
    model: open_clip.CLIP,
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    images: np.ndarray,
    records: pd.DataFrame,
    cfg: TrainingConfig,
    evaluate: Callable[[torch.nn.Module], Mapping[str, float]] | None = None,
    log: logging.Logger = log,
) -> list[dict[str, float]]:
    """Train ``model`` in place on uint8 [N, S, S, 3] images and their planted ``records``
    (caption, objects, background); return one row per step.

    ``cfg.paired_attributes`` makes each random batch into pairs (:func:`attribute_pairs`);
    ``cfg.hard_negatives`` adds hard negative captions to each batch
    (:func:`attribute_swap_negatives`). Both draw from their own generators: the random batches
    are those of a run without them.

    Each row holds step, loss, lr and seconds (training time so far, evaluation excluded). Every
    ``cfg.eval_every`` steps and at the last step, ``evaluate(model)``'s metrics join the row and a
    progress line is logged; in between, a line with the time left every :data:`PROGRESS_SECONDS`.
    The model is left in eval mode.
    """
    if len(images) != len(records) or len(images) < cfg.batch_size:
        raise ValueError(
            f"need as many records as images and at least batch_size={cfg.batch_size}; got {len(images)} images, {len(records)} records"
        )
    pairs = attribute_pairs(records, cfg.paired_attributes) if cfg.paired_attributes else None
    vocabularies = {attribute: sorted(set(records[attribute])) for attribute in cfg.hard_negatives}
    negatives = attribute_swap_negatives(records, vocabularies, cfg.hard_negatives) if cfg.hard_negatives else None
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    negatives_generator = torch.Generator().manual_seed(cfg.seed + 1)
    pairs_generator = torch.Generator().manual_seed(cfg.seed + 2)
    pixels = torch.as_tensor(images)
    tokens = tokenizer(records["caption"].tolist())
    model.to(cfg.device).train()
    optimizer = torch.optim.AdamW(_parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step))
    history, seconds, logged = [], 0.0, 0.0
    log.info("training %d steps of %d images on %s", cfg.steps, cfg.batch_size, cfg.device)
    for step in range(1, cfg.steps + 1):
        start = time.perf_counter()
        batch = torch.randperm(len(pixels), generator=generator)[: cfg.batch_size]
        if pairs is not None:
            batch = pairs(batch, pairs_generator)
        texts = tokens[batch]
        if negatives is not None:  # a negative equal to a caption of the batch would be a false negative
            positives = set(records["caption"].iloc[batch.numpy()])
            texts = torch.cat(
                [texts, tokenizer([text for text in negatives(batch, negatives_generator) if text not in positives])]
            )
        image_features, text_features, logit_scale = model(_pixels(model, pixels[batch]), texts.to(cfg.device))
        extra = text_features[len(batch) :] if negatives is not None else None
        loss = contrastive_loss(image_features, text_features[: len(batch)], logit_scale, extra)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        row = {"step": step, "loss": loss.item(), "lr": float(schedule.get_last_lr()[0])}
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))
        seconds += time.perf_counter() - start
        row["seconds"] = seconds
        if evaluate is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            row.update(evaluate(model))
            model.train()
            log.info(
                "step %d/%d  loss %.4f  %.0f s  %s",
                step,
                cfg.steps,
                row["loss"],
                seconds,
                "  ".join(f"{key} {value:.3f}" for key, value in row.items() if key not in ("step", "loss", "lr", "seconds")),
            )
            logged = seconds
        elif seconds - logged >= PROGRESS_SECONDS:
            left = seconds / step * (cfg.steps - step)
            log.info("step %d/%d  loss %.4f  %.0f s, about %.0f s of training left", step, cfg.steps, row["loss"], seconds, left)
            logged = seconds
        history.append(row)
    model.eval()
    return history


@torch.no_grad()
def class_embeddings(
    model: open_clip.CLIP,
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    values: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 1024,
) -> torch.Tensor:
    """Prompt-ensembled class embeddings [V, D]: per value, the mean of its normalised prompt embeddings, renormalised."""
    prompts = [template.format(value) for value in values for template in templates]
    texts = torch.cat(
        [
            F.normalize(model.encode_text(tokenizer(prompts[start : start + batch_size]).to(model.logit_scale.device)), dim=-1)
            for start in range(0, len(prompts), batch_size)
        ]
    )
    return F.normalize(texts.view(len(values), len(templates), -1).mean(1), dim=-1)


@torch.no_grad()
def zero_shot_predictions(
    model: open_clip.CLIP,
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    images: np.ndarray,
    vocabularies: Mapping[str, Sequence[str]],
    batch_size: int = 512,
) -> dict[str, np.ndarray]:
    """Per attribute, the value whose ensembled class embedding (:func:`attribute_templates`) is closest to each image.

    Images are encoded once (in batches), each attribute's prompts once.
    """
    model.eval()
    pixels = torch.as_tensor(images)
    features = torch.cat(
        [
            F.normalize(model.encode_image(_pixels(model, pixels[start : start + batch_size])), dim=-1)
            for start in range(0, len(pixels), batch_size)
        ]
    )
    predictions = {}
    for attribute, vocabulary in vocabularies.items():
        texts = class_embeddings(model, tokenizer, vocabulary, attribute_templates(vocabularies, attribute))
        predictions[attribute] = np.asarray(vocabulary)[(features @ texts.T).argmax(-1).cpu().numpy()]
    return predictions


def zero_shot_accuracies(
    model: open_clip.CLIP,
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    images: np.ndarray,
    records: pd.DataFrame,
    vocabularies: Mapping[str, Sequence[str]],
) -> dict[str, float]:
    """Per attribute, the share of images whose zero-shot prediction equals ``records[attribute]``."""
    for attribute in vocabularies:
        if attribute not in records.columns or attribute not in CAPTION_SLOTS:
            raise ValueError(
                f"attribute: {attribute!r} is invalid; valid values: {sorted(set(records.columns) & set(CAPTION_SLOTS))}"
            )
    predictions = zero_shot_predictions(model, tokenizer, images, vocabularies)
    return {attribute: float(np.mean(predicted == records[attribute].to_numpy())) for attribute, predicted in predictions.items()}
