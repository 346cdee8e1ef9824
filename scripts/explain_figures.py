"""Overlays, multimodal prompt maps and segmentation figures (Snakemake script)."""

import numpy as np

from cliplens.datasets import read_manifest
from cliplens.embed import load_pixels
from cliplens.explain import ExplanationScores, explanation_transform, prompt_maps, square_masks
from cliplens.explain_figures import overlay_grid, segmentation_figure
from cliplens.models import load_model
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    params, outputs = snakemake.params, snakemake.output
    cfg, random_weights = params.explain, params.random_weights
    explanations = ExplanationScores.load(snakemake.input.maps)
    manifest = read_manifest(snakemake.input.manifest).set_index("image_id")
    shown = explanations.image_ids[: cfg["figure_images"]]
    rows = manifest.loc[shown].reset_index()
    loaded = load_model(params.model)
    transform = explanation_transform(cfg["image_size"], cfg["resize_mode"])
    pixels = load_pixels(loaded, rows, shown, transform, cfg["image_size"])
    images = pixels.permute(0, 2, 3, 1).cpu().numpy()

    own = np.clip(rows["label_index"].to_numpy(), 0, None)  # unlabeled images show label 0
    maps = {m: explanations.pair_maps(m, range(len(shown)), own).numpy()[:, None] for m in explanations.scores}
    overlay_grid(images, maps, [[explanations.labels[i]] for i in own], outputs.overlays, random_weights=random_weights)
    overlay_grid(images, prompt_maps(loaded, pixels, cfg["prompts"], cfg), cfg["prompts"], outputs.prompts, random_weights=random_weights)

    method = "surgery" if "surgery" in explanations.scores else next(iter(explanations.scores))
    best = explanations.segmentation(method)[: len(shown)]
    mask_ids = manifest.attrs.get("mask_ids")
    if mask_ids:
        ids = np.asarray(mask_ids)
        names = dict(zip(mask_ids, explanations.labels))
        truth = square_masks(rows["mask_path"].tolist(), explanations.image_hw, cfg["resize_mode"])
        segmentation_figure(images, ids[best], names, outputs.segmentation, ground_truth=truth, random_weights=random_weights)
    else:  # label index + 1, so that no class is drawn as "ignored"
        names = {i + 1: name for i, name in enumerate(explanations.labels)}
        segmentation_figure(images, best + 1, names, outputs.segmentation, random_weights=random_weights)
