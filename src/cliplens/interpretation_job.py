"""Head-level interpretation in the pipeline: what the jobs of workflow/rules/interpret.smk do.

Glue between a dataset, a model and :mod:`cliplens.decompose`, :mod:`cliplens.textspan` and
:mod:`cliplens.interpret`. Text sets (a TEXTSPAN pool, the property descriptions) are embedded
once per model into Parquet files (:mod:`cliplens.store`); the decomposition of a dataset's first
images goes to a :class:`~cliplens.decompose.ContributionStore` that every analysis reads.
Zero-shot segmentation from the decomposition is stored in the layout of the CLIP Surgery maps
(:class:`~cliplens.explain.ExplanationScores`), so that it is evaluated by the same code.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import open_clip
import pandas as pd
import pyarrow as pa
import torch
from torchvision.transforms.v2 import functional as TF

from cliplens import interpret
from cliplens.decompose import ARRAY_FIELDS, Contributions, ContributionStore, decompose, mean_ablation_tables, write_head_contributions
from cliplens.embed import iterate_batches, load_pixels, pixel_transform
from cliplens.explain import ExplanationScores, explanation_transform, square_masks
from cliplens.explain_figures import segmentation_figure
from cliplens.models import LoadedModel
from cliplens.plotting import save_figure
from cliplens.prompts import TEMPLATE_SETS, encode_labels
from cliplens.store import EmbeddingWriter, embedding_schema, read_embeddings
from cliplens.textpools import BUILTIN_POOL, POOL_NAMES, PROPERTIES_FILE, TEXTSPAN_POOLS, textspan_pool_path

log = logging.getLogger(__name__)

POOL_FIELDS = [pa.field("text_index", pa.int64()), pa.field("text", pa.string())]
PROPERTY_FIELDS = [pa.field("property", pa.string()), pa.field("text", pa.string())]
METHOD = "decomposition"
NO_LABELS = "unavailable: no image has a class label"
DEFAULT_QUERY_IMAGES = 2
"""Query images when none are configured: the first decomposed images."""
SEGMENTATION_BUDGET = 1 << 26
"""Floats of upsampled class maps rendered at once when segmenting (256 MB)."""


# --------------------------------------------------------------------------- planning


def decomposable(model_cfg: Mapping[str, Any]) -> bool:
    """Whether the head decomposition supports a model: an open_clip ViT with CLS pooling.

    Decided from the architecture's open_clip config, without building the model. A model
    without a known architecture (an OpenAI checkpoint without ``model.arch``) counts as
    supported; its job then fails with the decomposition's own message if it is not.
    """
    config = open_clip.get_model_config(model_cfg["arch"]) if model_cfg.get("arch") else None
    if config is None:
        return True
    vision = config.get("vision_cfg", {})
    return (
        isinstance(vision.get("layers"), int)
        and not vision.get("timm_model_name")
        and not vision.get("attentional_pool")
        and (vision.get("pool_type") or "tok") == "tok"
    )


def query_map_names(queries: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Names of the topic-map figures (query image x text) and contrastive-map figures (query image x pair)."""
    images = range(len(queries["images"]) or DEFAULT_QUERY_IMAGES)
    topic = [f"topic_maps/image{i}_text{j}" for i in images for j in range(len(queries["texts"]))]
    contrastive = [f"contrastive_maps/image{i}_pair{j}" for i in images for j in range(len(queries["contrastive"]))]
    return topic, contrastive


def interpret_figure_names(cfg: Mapping[str, Any]) -> list[str]:
    """Every figure of the head-level interpretation of the configured dataset (names without .png):
    segmentation needs class names (a folder without labels has none), its evaluation masks (coco128)."""
    names = ["mean_ablation", "textspan", "head_properties", "interpretability_metrics"]
    names += ["property_neighbours", "head_image_neighbours", "head_text_neighbours"]
    names += [name for group in query_map_names(cfg["interpret"]["queries"]) for name in group]
    dataset = cfg["dataset"]
    if dataset["kind"] != "folder" or dataset["labels_csv"] is not None:
        names.append("segmentation")
    if dataset["kind"] == "coco128":
        names.append("segmentation_evaluation")
    return names


def pool_key(pool: str) -> str:
    """Name of a text pool in result paths: the pool's name, or ``file-<stem>`` for a text file."""
    if pool in POOL_NAMES:
        return pool
    return "file-" + re.sub(r"[^A-Za-z0-9_.+-]", "_", Path(pool).stem)


def pool_file(textspan_cfg: Mapping[str, Any]) -> Path:
    """The text file of the configured pool (a paper pool is checked against its pinned SHA-256)."""
    pool = textspan_cfg["pool"]
    if pool == "builtin":
        return BUILTIN_POOL
    if pool in TEXTSPAN_POOLS:
        return textspan_pool_path(pool, textspan_cfg["pool_dir"])
    return Path(pool).expanduser()


def properties_file(path: str | None) -> Path:
    """The property descriptions file: the configured one, or the built-in one."""
    return PROPERTIES_FILE if path is None else Path(path).expanduser()


# --------------------------------------------------------------------------- text embeddings


def encode_texts(loaded: LoadedModel, texts: Sequence[str], templates: str) -> np.ndarray:
    """Normalised, template-ensembled text embeddings [T, D] (``none``: each text as is)."""
    return encode_labels(loaded, texts, TEMPLATE_SETS[templates]).numpy()


def _write_texts(path: str | os.PathLike, fields: list[pa.Field], columns: Mapping[str, Sequence], embeddings: np.ndarray, provenance: Mapping[str, Any]) -> None:
    schema = embedding_schema(fields, embeddings.shape[1], "float32", provenance)
    with EmbeddingWriter(path, schema) as writer:
        writer.write(columns, embeddings)


def write_pool_embeddings(loaded: LoadedModel, texts: Sequence[str], templates: str, path: str | os.PathLike) -> None:
    """Embed a text pool (one row per text, in pool order) into a Parquet file."""
    embeddings = encode_texts(loaded, texts, templates)
    provenance = {**loaded.provenance, "templates": templates}
    _write_texts(path, POOL_FIELDS, {"text_index": range(len(texts)), "text": list(texts)}, embeddings, provenance)


def read_pool_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Texts and embeddings [M, D] of a pool file, in pool order."""
    rows, embeddings = read_embeddings(path)
    order = np.argsort(rows["text_index"].to_numpy())
    return rows["text"].to_numpy()[order].tolist(), embeddings[order]


def write_property_embeddings(loaded: LoadedModel, properties: Mapping[str, list[str]], path: str | os.PathLike) -> None:
    """Embed every description of every property (rows grouped by property, in file order)."""
    encoded = interpret.encode_properties(loaded, dict(properties))
    columns = {"property": [encoded.names[i] for i in encoded.owner], "text": [t for name in encoded.names for t in properties[name]]}
    _write_texts(path, PROPERTY_FIELDS, columns, encoded.embeddings, loaded.provenance)


def read_property_embeddings(path: str | os.PathLike) -> interpret.PropertyEmbeddings:
    """The embedded property descriptions of :func:`write_property_embeddings`."""
    rows, embeddings = read_embeddings(path)
    names = list(dict.fromkeys(rows["property"]))
    owner = rows["property"].map({name: i for i, name in enumerate(names)}).to_numpy()
    return interpret.PropertyEmbeddings(names, embeddings, owner)


# --------------------------------------------------------------------------- decomposition and ablation


def decompose_dataset(
    loaded: LoadedModel,
    manifest: pd.DataFrame,
    out_dir: str | os.PathLike,
    max_images: int,
    head_layers: int | None,
    dtype: str,
    batch_size: int = 32,
    num_workers: int = 0,
) -> ContributionStore:
    """Decompose the first ``max_images`` readable images (the model's own preprocessing) into a store.

    ``head_layers``: heads of the last n layers are stored (None: every layer's).
    """
    rows = manifest.head(max_images)
    batches = (
        (batch["image_id"].tolist(), TF.normalize(pixels, loaded.mean, loaded.std))
        for batch, pixels, _ in iterate_batches(rows, pixel_transform(loaded), loaded.image_size, batch_size, num_workers, loaded.device)
    )
    return write_head_contributions(batches, loaded, out_dir, layers=head_layers, dtype=dtype)


def select_rows(contributions: Contributions, keep: np.ndarray) -> Contributions:
    """The rows of ``contributions`` where ``keep`` is true."""
    arrays = {name: np.asarray(getattr(contributions, name))[keep] for name in ARRAY_FIELDS}
    return dataclasses.replace(contributions, ids=contributions.ids[keep], **arrays)


def store_labels(store: ContributionStore, manifest: pd.DataFrame) -> np.ndarray:
    """Class index of every stored image, in store order (-1: unlabelled)."""
    return manifest.set_index("image_id").loc[store.ids, "label_index"].to_numpy()


def ablation_table(store: ContributionStore, manifest: pd.DataFrame, class_embeddings: np.ndarray) -> pd.DataFrame:
    """Mean-ablation accuracies (:func:`cliplens.decompose.mean_ablation_tables`) over the labelled stored images.

    A first row ``zero_shot`` holds the accuracy of the stored image embeddings themselves, which
    the row ``none`` (sum of the stored terms) reproduces up to storage rounding. Columns:
    ablation, layer, head, accuracy, n_images. Without any labelled image: one row saying so.
    """
    labels = store_labels(store, manifest)
    keep = labels >= 0
    if not keep.any():
        return pd.DataFrame([{"ablation": NO_LABELS, "layer": -1, "head": -1, "accuracy": np.nan, "n_images": 0}])
    source = store if keep.all() else select_rows(store.load(), keep)
    labels = labels[keep]
    embedding = np.concatenate([np.asarray(chunk.embedding, np.float32) for chunk in source.chunks()])
    zero_shot = float(((embedding @ np.asarray(class_embeddings, np.float32).T).argmax(1) == labels).mean())
    table = pd.concat(
        [pd.DataFrame([{"ablation": "zero_shot", "layer": -1, "head": -1, "accuracy": zero_shot}]),
         mean_ablation_tables(source, labels, class_embeddings)],
        ignore_index=True,
    )
    return table.assign(n_images=len(labels))


def message_figure(message: str, path: str | os.PathLike, random_weights: bool = False) -> list[Path]:
    """A figure that only says why there is nothing to show."""
    fig, axis = plt.subplots(figsize=(6, 1.5))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return save_figure(fig, path, random_weights=random_weights)


# --------------------------------------------------------------------------- heads


def analysed_layers(store: ContributionStore, layers: int) -> list[int]:
    """The last ``layers`` layers whose heads the store holds (absolute indices)."""
    return list(store.head_layers[-layers:])


def head_labels_from_frame(frame: pd.DataFrame) -> interpret.HeadLabels:
    """Rebuild :class:`~cliplens.interpret.HeadLabels` from its ``to_frame()`` table."""
    shares = [column for column in frame.columns if column.startswith("share_")]
    return interpret.HeadLabels(
        frame[["layer", "head"]].to_numpy(), [c.removeprefix("share_") for c in shares], frame[shares].to_numpy(np.float64)
    )


def query_heads(requested: Sequence[Sequence[int]], store: ContributionStore) -> list[tuple[int, int]]:
    """(layer, head) pairs of the per-head searches: the requested ones (negative layers count
    from the end), or every head of the last layer."""
    if not requested:
        return [(store.num_layers - 1, head) for head in range(store.num_heads)]
    heads = [(layer % store.num_layers, head) for layer, head in requested]
    missing = [pair for pair in heads if pair[0] not in store.head_layers or not 0 <= pair[1] < store.num_heads]
    if missing:
        raise ValueError(f"interpret.queries.heads: {missing} not stored; layers {store.head_layers}, heads 0..{store.num_heads - 1}")
    return heads


def query_images(store: ContributionStore, requested: Sequence[str]) -> np.ndarray:
    """Store rows of the query images: the requested ids, or the first DEFAULT_QUERY_IMAGES images."""
    ids = list(store.ids)
    if not requested:
        return np.arange(min(DEFAULT_QUERY_IMAGES, len(ids)))
    missing = [image for image in requested if image not in ids]
    if missing:
        raise ValueError(f"interpret.queries.images: {missing} are not among the {len(ids)} decomposed images, e.g. {ids[:5]}")
    return np.asarray([ids.index(image) for image in requested])


# --------------------------------------------------------------------------- neighbour searches


@dataclasses.dataclass
class NeighbourRows:
    """Rows of a neighbour figure: ``indices``/``scores [R, k]`` (store rows), a title per row and,
    for image queries, the query's store row ``queries [R]``."""

    titles: list[str]
    indices: np.ndarray
    scores: np.ndarray
    queries: np.ndarray | None = None

    @classmethod
    def concatenate(cls, parts: Sequence["NeighbourRows"], k: int, image_queries: bool) -> "NeighbourRows":
        """All rows of ``parts`` (possibly none) one after the other."""
        empty = np.empty((0, k), np.int64)
        return cls(
            titles=[title for part in parts for title in part.titles],
            indices=np.concatenate([empty, *(p.indices for p in parts)]),
            scores=np.concatenate([empty.astype(np.float32), *(p.scores for p in parts)]),
            queries=np.concatenate([np.empty(0, np.int64), *(p.queries for p in parts)]) if image_queries else None,
        )


def property_neighbour_rows(
    store: ContributionStore, labels: interpret.HeadLabels, queries: np.ndarray, properties: Sequence[str], k: int
) -> NeighbourRows:
    """Neighbours of the query images using only the heads labelled with each property
    (empty ``properties``: every property that labels a head); properties no head carries are skipped."""
    parts = []
    for prop in properties or list(dict.fromkeys(labels.labels)):
        mask = labels.head_mask(prop, store.head_layers, store.num_heads)
        if not mask.any():
            log.info("no head is labelled %r: no property neighbours for it", prop)
            continue
        representation = np.concatenate([interpret.property_representation(chunk.heads, mask) for chunk in store.chunks()])
        indices, scores = interpret.nearest_neighbours(representation[queries], representation, k, exclude=queries)
        parts.append(NeighbourRows([f"{prop} ({int(mask.sum())} heads)"] * len(queries), indices, scores, queries))
    return NeighbourRows.concatenate(parts, k, image_queries=True)


def head_image_neighbour_rows(store: ContributionStore, heads: Sequence[tuple[int, int]], queries: np.ndarray, k: int) -> NeighbourRows:
    """Per-head image neighbours of the query images (cosine of one head's contributions)."""
    parts = []
    for layer, head in heads:
        indices, scores = interpret.head_image_neighbours(store.head_matrix(layer, head), queries, k)
        parts.append(NeighbourRows([f"L{layer}.H{head}"] * len(queries), indices, scores, queries))
    return NeighbourRows.concatenate(parts, k, image_queries=True)


def head_text_neighbour_rows(
    store: ContributionStore, heads: Sequence[tuple[int, int]], texts: Sequence[str], text_embeddings: np.ndarray, k: int
) -> NeighbourRows:
    """Per-head images of each text: the database ranked by t . c_lh."""
    parts = []
    for layer, head in heads:
        indices, scores = interpret.head_text_neighbours(store.head_matrix(layer, head), text_embeddings, k)
        parts.append(NeighbourRows([f"L{layer}.H{head}: {text}" for text in texts], indices, scores))
    return NeighbourRows.concatenate(parts, k, image_queries=False)


def as_images(pixels: torch.Tensor) -> np.ndarray:
    """[n, S, S, 3] float images of [0,1] pixels [n, 3, S, S], for plotting."""
    return pixels.permute(0, 2, 3, 1).float().cpu().numpy()


def plot_neighbour_rows(
    rows: NeighbourRows,
    images: np.ndarray,
    image_rows: np.ndarray,
    path: str | os.PathLike,
    empty_message: str,
    random_weights: bool = False,
) -> list[Path]:
    """Draw the rows with :func:`cliplens.interpret.plot_neighbours`; ``images[i]`` shows store row
    ``image_rows[i]`` (sorted). Without any row, a figure with ``empty_message``."""
    if not rows.titles:
        return message_figure(empty_message, path, random_weights)
    query_images = images[np.searchsorted(image_rows, rows.queries)] if rows.queries is not None else None
    return interpret.plot_neighbours(
        images[np.searchsorted(image_rows, rows.indices)], rows.scores, path,
        query_images=query_images, query_titles=rows.titles, random_weights=random_weights,
    )


# --------------------------------------------------------------------------- maps of query images


def head_token_terms(loaded: LoadedModel, pixels: torch.Tensor, layers: int) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, int]]:
    """Head x token terms [B, n, H, N, D] of the last ``layers`` layers of [0,1] pixels, their layers and grid."""
    result = decompose(loaded, TF.normalize(pixels, loaded.mean, loaded.std), tokens=True, last_layers=layers)
    return result.head_tokens.cpu(), result.token_layers, result.grid_size


# --------------------------------------------------------------------------- zero-shot segmentation


class DecompositionScores(ExplanationScores):
    """Class maps of the decomposition's zero-shot segmentation (method ``decomposition``) in the
    layout of CLIP Surgery's scores, so that :func:`cliplens.explain.mask_evaluation` applies.

    Only the segmentation differs: the per-pixel argmax of the bilinearly upsampled class maps
    (:func:`cliplens.interpret.segment`, docs/interpretation.md section 8), without the min-max
    normalisation per map that rendering applies.
    """

    def segmentation(self, method: str, chunk: int | None = None) -> np.ndarray:
        """Per-pixel class index [images, H, W], rendered in chunks of at most SEGMENTATION_BUDGET floats."""
        scores = self.scores[method]
        chunk = chunk or max(1, SEGMENTATION_BUDGET // max(scores.shape[1] * self.image_hw[0] * self.image_hw[1], 1))
        parts = [interpret.segment(scores[start : start + chunk], self.image_hw) for start in range(0, len(scores), chunk)]
        return np.concatenate(parts) if parts else np.empty((0, *self.image_hw), np.int64)

    def head(self, count: int) -> "DecompositionScores":
        """The first ``count`` images."""
        scores = {method: values[:count] for method, values in self.scores.items()}
        return dataclasses.replace(self, image_ids=self.image_ids[:count], scores=scores)


def segmentation_scores(
    loaded: LoadedModel,
    rows: pd.DataFrame,
    labels: Sequence[str],
    class_embeddings: np.ndarray,
    layers: int,
    resize_mode: str,
    batch_size: int = 32,
    num_workers: int = 0,
) -> DecompositionScores:
    """Zero-shot class maps [images, C, gh, gw] of the heads of the last ``layers`` layers for the
    images of ``rows``, at the model's input size with the surgery evaluation's geometry."""
    if not len(labels):
        raise ValueError("zero-shot segmentation needs class names; the dataset has none")
    size = loaded.image_size
    transform = explanation_transform(size, resize_mode)
    ids, parts = [], []
    for batch, pixels, _ in iterate_batches(rows, transform, size, batch_size, num_workers, loaded.device):
        head_tokens, _, grid = head_token_terms(loaded, pixels, layers)
        parts.append(interpret.zero_shot_segmentation(head_tokens, class_embeddings, grid))
        ids += batch["image_id"].tolist()
    return DecompositionScores(ids, list(labels), (size, size), {METHOD: np.concatenate(parts)}, np.asarray(class_embeddings))


def plot_segmentation(
    loaded: LoadedModel,
    scores: DecompositionScores,
    manifest: pd.DataFrame,
    resize_mode: str,
    path: str | os.PathLike,
    random_weights: bool = False,
) -> list[Path]:
    """Images, their zero-shot segmentation and (where the dataset has masks) the ground truth."""
    pixels = load_pixels(loaded, manifest, scores.image_ids, explanation_transform(loaded.image_size, resize_mode))
    predicted = scores.segmentation(METHOD)
    mask_ids = manifest.attrs.get("mask_ids")
    if mask_ids:
        masks = manifest.set_index("image_id").loc[scores.image_ids, "mask_path"]
        truth = square_masks(masks.tolist(), scores.image_hw, resize_mode) if masks.notna().all() else None
        names = dict(zip(mask_ids, scores.labels))
        return segmentation_figure(as_images(pixels), np.asarray(mask_ids)[predicted], names, path, ground_truth=truth, random_weights=random_weights)
    names = {i + 1: name for i, name in enumerate(scores.labels)}  # + 1: no class is drawn as "ignored"
    return segmentation_figure(as_images(pixels), predicted + 1, names, path, random_weights=random_weights)
