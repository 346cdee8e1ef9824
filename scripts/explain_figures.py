"""Overlays of each image's own label and the open-vocabulary segmentation figure (Snakemake script;
no model code: the maps are stored, the images are decoded in the maps' square geometry by Pillow)."""

import numpy as np

from cliplens.datasets import read_manifest
from cliplens.explain.figures import overlay_grid
from cliplens.figure_files import set_gallery_pdf
from cliplens.image_files import square_images
from cliplens.runtime import job_logging
from cliplens.stored_maps import ExplanationScores, plot_segmentation

with job_logging(snakemake.log[0], snakemake.threads):
    params, outputs = snakemake.params, snakemake.output
    cfg, random_weights = params.explain, params.random_weights
    set_gallery_pdf(params.gallery_pdf)
    explanations = ExplanationScores.load(snakemake.input.maps)
    manifest = read_manifest(snakemake.input.manifest)
    shown = explanations.image_ids[: cfg["figure_images"]]
    rows = manifest.set_index("image_id").loc[shown].reset_index()
    images = square_images(rows["path"].tolist(), cfg["image_size"], cfg["resize_mode"])  # as the maps saw them

    own = np.clip(rows["label_index"].to_numpy(), 0, None)  # unlabeled images show label 0
    maps = {m: explanations.pair_maps(m, range(len(shown)), own)[:, None] for m in explanations.scores}
    overlay_grid(images, maps, [[explanations.labels[i]] for i in own], outputs.overlays, random_weights=random_weights)
    method = "surgery" if "surgery" in explanations.scores else next(iter(explanations.scores))
    plot_segmentation(explanations, method, images, manifest, cfg["resize_mode"], outputs.segmentation, random_weights)
