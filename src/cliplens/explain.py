"""CLIP Surgery in the pipeline: explanation scores for a dataset, their storage and their evaluation.

Maps are stored at patch-grid resolution ([images, labels, gh, gw], float16, NPZ) - compact and
exact, since rendering (min-max per map + bilinear upsampling) is deterministic and cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torchvision.transforms.v2 import functional as TF

from cliplens import evaluate, surgery
from cliplens.embed import iterate_batches, load_pixels, preprocess_without_normalize
from cliplens.files import atomic_output
from cliplens.gradcam import gradcam
from cliplens.models import LoadedModel
from cliplens.prompts import TEMPLATE_SETS, encode_labels

METHODS = ("raw", "surgery", "gradcam")


@dataclass
class ExplanationScores:
    """Patch-grid scores of every method for a set of images x labels."""

    image_ids: list[str]
    labels: list[str]
    image_hw: tuple[int, int]
    scores: dict[str, np.ndarray]
    """method -> [images, labels, gh, gw] float32 scores (higher = more relevant)."""
    text: np.ndarray
    """[labels, D] normalised, prompt-ensembled label embeddings used for the maps."""

    def pair_maps(self, method: str, image_index: Sequence[int], label_index: Sequence[int]) -> torch.Tensor:
        """Rendered maps [M, H, W] in [0, 1] of (image, label) pairs (min-max per map, bilinear upsampling)."""
        scores = torch.from_numpy(self.scores[method][np.asarray(image_index), np.asarray(label_index)])
        count, gh, gw = scores.shape
        patch_scores = scores.reshape(count, 1, gh * gw).transpose(1, 2)
        return surgery.render_patch_maps(patch_scores, (gh, gw), self.image_hw)[:, 0]

    def segmentation(self, method: str, chunk: int = 8) -> np.ndarray:
        """Open-vocabulary segmentation [images, H, W]: per-pixel argmax over labels of rendered maps."""
        scores = torch.from_numpy(self.scores[method])
        batch, labels, gh, gw = scores.shape
        parts = []
        for start in range(0, batch, chunk):  # chunks bound the [chunk, labels, H, W] rendering
            part = scores[start : start + chunk].reshape(-1, labels, gh * gw).transpose(1, 2)
            parts.append(surgery.segment(surgery.render_patch_maps(part, (gh, gw), self.image_hw)).numpy())
        return np.concatenate(parts) if parts else np.empty((0, *self.image_hw), np.int64)

    def save(self, path: str | os.PathLike, random_weights: bool) -> None:
        """Write an NPZ (atomically) with an index of image ids and labels."""
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle,
                image_ids=np.asarray(self.image_ids, dtype=str),
                labels=np.asarray(self.labels, dtype=str),
                image_hw=np.asarray(self.image_hw),
                text=self.text,
                random_weights=np.asarray(random_weights),
                **{f"scores_{m}": s.astype(np.float16) for m, s in self.scores.items()},
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExplanationScores":
        with np.load(path) as data:
            return cls(
                image_ids=data["image_ids"].tolist(),
                labels=data["labels"].tolist(),
                image_hw=tuple(int(v) for v in data["image_hw"]),
                scores={k.removeprefix("scores_"): data[k].astype(np.float32) for k in data if k.startswith("scores_")},
                text=data["text"],
            )


def explanation_transform(image_size: int, resize_mode: str):
    """Square input of ``image_size``: 'squash' (the paper, no centre crop) or 'shortest' (centre crop)."""
    return preprocess_without_normalize({"size": image_size, "resize_mode": resize_mode})


def label_features(loaded: LoadedModel, labels: Sequence[str], templates: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt-ensembled label embeddings [C, D] and the ensembled empty prompt [D] (each text encoded once)."""
    features = encode_labels(loaded, [*labels, ""], TEMPLATE_SETS[templates])
    return features[:-1], features[-1]


def patch_grid(model: torch.nn.Module, image_hw: tuple[int, int]) -> tuple[int, int]:
    """The token grid an input size gives: patch size for a ViT, stride 32 for a ModifiedResNet."""
    visual = surgery.image_tower(model)
    stride = visual.patch_size if isinstance(visual, VisionTransformer) else (32, 32)
    return image_hw[0] // stride[0], image_hw[1] // stride[1]


def patch_scores(
    loaded: LoadedModel, pixels: torch.Tensor, text: torch.Tensor, method: str, depth: int
) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, C, gh, gw] scores of one method for [0,1] pixels: one image forward pass for all C labels."""
    images = TF.normalize(pixels, loaded.mean, loaded.std)
    text = text.to(pixels.device)
    if method == "gradcam":
        grid = patch_grid(loaded.model, tuple(images.shape[-2:]))
        return gradcam(loaded.model, images, text, out_hw=grid), grid
    with torch.inference_mode(), loaded.autocast():
        tokens, grid = surgery.image_tokens_and_grid(loaded.model, images, depth if method == "surgery" else 0)
    tokens = F.normalize(tokens.float(), dim=-1)
    if method == "surgery" and text.shape[0] > 1:
        similarity = surgery.feature_surgery(tokens, text)
    else:
        similarity = surgery.raw_similarity(tokens, text)
    return similarity[:, 1:].transpose(1, 2).reshape(len(images), text.shape[0], *grid), grid


def explanation_scores(
    loaded: LoadedModel,
    rows: pd.DataFrame,
    labels: Sequence[str],
    cfg: Mapping[str, Any],
    batch_size: int = 16,
    num_workers: int = 0,
) -> ExplanationScores:
    """Scores of every configured method for the images of ``rows`` against the label set."""
    text, _ = label_features(loaded, labels, cfg["templates"])
    transform = explanation_transform(cfg["image_size"], cfg["resize_mode"])
    ids, parts = [], {method: [] for method in cfg["methods"]}
    for batch, pixels, _ in iterate_batches(rows, transform, cfg["image_size"], batch_size, num_workers, loaded.device):
        ids += batch["image_id"].tolist()
        for method in cfg["methods"]:
            parts[method].append(patch_scores(loaded, pixels, text, method, cfg["surgery_depth"])[0].float().cpu().numpy())
    size = (cfg["image_size"], cfg["image_size"])
    scores = {m: np.concatenate(p) if p else np.empty((0, len(labels), 1, 1), np.float32) for m, p in parts.items()}
    return ExplanationScores(ids, list(labels), size, scores, text.numpy())


def prompt_maps(
    loaded: LoadedModel, pixels: torch.Tensor, prompts: Sequence[str], cfg: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """Multimodal visualisation: maps [B, P, H, W] of free-text prompts (sentences too) per method.

    Each prompt stands alone (single-prompt surgery: the ensembled empty prompt is the redundant feature).
    """
    text, empty = label_features(loaded, prompts, cfg["templates"])
    images = TF.normalize(pixels, loaded.mean, loaded.std)
    maps = {}
    for method in cfg["methods"]:
        if method == "gradcam":
            maps[method] = gradcam(loaded.model, images, text.to(pixels.device))
        else:
            with loaded.autocast():
                maps[method] = surgery.explain(
                    loaded.model, images, text.to(pixels.device), empty.to(pixels.device), method,
                    cfg["surgery_depth"], feature_surgery_mode="single_prompt" if method == "surgery" else "off",
                )
    return {method: value.float().cpu() for method, value in maps.items()}


def mask_evaluation(
    explanations: ExplanationScores,
    rows: pd.DataFrame,
    class_ids: Sequence[int],
    resize_mode: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (image, present class, method): mask metrics; and per method: open-vocabulary segmentation mIoU.

    ``class_ids[c]`` is the mask id of label c. Masks get the same square geometry as the images.
    """
    size = explanations.image_hw
    by_id = rows.set_index("image_id")
    masks = square_masks(by_id.loc[explanations.image_ids, "mask_path"].tolist(), size, resize_mode)
    id_to_label = {cid: c for c, cid in enumerate(class_ids)}
    per_map, segmentation = [], []
    image_index, label_index = [], []
    for i, mask in enumerate(masks):
        present = [id_to_label[v] for v in np.unique(mask) if v in id_to_label]
        image_index += [i] * len(present)
        label_index += present
    for method in explanations.scores:
        chosen_maps = explanations.pair_maps(method, image_index, label_index).numpy()
        chosen_masks = masks[image_index] == np.asarray(class_ids)[label_index][:, None, None]
        metrics = evaluate.binary_metrics(chosen_maps, chosen_masks)
        per_map.append(
            pd.DataFrame(
                {"method": method, "image_id": np.asarray(explanations.image_ids)[image_index],
                 "label": np.asarray(explanations.labels)[label_index], **metrics}
            )
        )
        predicted = np.asarray(class_ids)[explanations.segmentation(method)]
        result = evaluate.miou(predicted, masks, num_classes=max(class_ids) + 1, ignore_index=0)
        segmentation.append({"method": method, "miou": result["miou"], "pixel_accuracy": result["pixel_accuracy"]})
    return pd.concat(per_map, ignore_index=True), pd.DataFrame(segmentation)


def square_masks(paths: Sequence[str], size: tuple[int, int], resize_mode: str) -> np.ndarray:
    """Class-index masks [N, H, W] resized (nearest) like the images: squash, or short side + centre crop."""
    masks = []
    for path in paths:
        mask = torch.from_numpy(evaluate.load_class_mask(path).astype(np.int64))[None]
        if resize_mode == "squash":
            mask = TF.resize(mask, list(size), interpolation=TF.InterpolationMode.NEAREST)
        else:
            mask = TF.center_crop(TF.resize(mask, size[0], interpolation=TF.InterpolationMode.NEAREST), list(size))
        masks.append(mask[0].numpy())
    return np.stack(masks)


def deletion_insertion_scores(
    loaded: LoadedModel,
    explanations: ExplanationScores,
    rows: pd.DataFrame,
    cfg: Mapping[str, Any],
    batch_size: int = 32,
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Deletion/insertion AUC per (image, method) for each image's top class (zero-shot on the clean image).

    The score is the cosine similarity between the modified image's embedding and the target text.
    """
    transform = explanation_transform(cfg["image_size"], cfg["resize_mode"])
    pixels = load_pixels(loaded, rows, explanations.image_ids, transform, cfg["image_size"])
    text = torch.from_numpy(explanations.text).to(loaded.device)

    def embed(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), loaded.autocast():
            return F.normalize(loaded.model.encode_image(TF.normalize(batch, loaded.mean, loaded.std)).float(), dim=-1)

    target = (embed(pixels) @ text.T).argmax(dim=1)
    tables, curves = [], {}
    for method in explanations.scores:
        maps = explanations.pair_maps(method, range(len(target)), target.cpu().numpy())
        deletion, insertion, method_curves = evaluate.deletion_insertion(
            pixels, maps.to(pixels.device), lambda batch, index: (embed(batch) * text[target[index]]).sum(dim=1),
            steps=cfg["evaluation"]["deletion_steps"], batch_size=batch_size,
        )
        curves[method] = method_curves
        tables.append(pd.DataFrame({"method": method, "image_id": explanations.image_ids,
                                    "target": np.asarray(explanations.labels)[target.cpu().numpy()],
                                    "deletion_auc": deletion, "insertion_auc": insertion}))
    return pd.concat(tables, ignore_index=True), curves


def evaluation_rows(manifest: pd.DataFrame, max_images: int) -> pd.DataFrame:
    """Images to explain: those with masks when the dataset has masks, the first ``max_images``."""
    with_masks = manifest[manifest["mask_path"].notna()]
    return (with_masks if len(with_masks) else manifest).head(max_images)


def write_evaluation(
    per_map: pd.DataFrame, segmentation: pd.DataFrame, model: str, outputs: Mapping[str, str], n_boot: int,
    random_weights: bool,
) -> pd.DataFrame:
    """Summarise per-map metrics per method (bootstrap CIs); write per_map, summary, segmentation and figure."""
    from cliplens.evaluate import summarise
    from cliplens.explain_figures import summary_figure

    per_map = per_map.assign(model=model)
    summary = summarise(per_map, by=["model", "method"], n_boot=n_boot)
    with atomic_output(outputs["per_map"]) as tmp:
        per_map.to_parquet(tmp, index=False)
    with atomic_output(outputs["summary"]) as tmp:
        summary.to_csv(tmp, index=False)
    with atomic_output(outputs["segmentation"]) as tmp:
        segmentation.assign(model=model).to_csv(tmp, index=False)
    summary_figure(summary, outputs["figure"], random_weights=random_weights)
    return summary
