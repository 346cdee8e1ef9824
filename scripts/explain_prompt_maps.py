"""Multimodal visualisation: maps of free-text prompts and their point prompts (Snakemake script)."""

import cliplens.explain.methods  # noqa: F401  (registers raw, surgery and gradcam)
from cliplens.datasets import read_manifest
from cliplens.explain.figures import overlay_grid
from cliplens.explain.methods import prompt_maps
from cliplens.explain.surgery import prompt_points
from cliplens.figure_files import set_gallery_pdf
from cliplens.images import as_images, load_pixels, square_transform
from cliplens.io import write_table
from cliplens.maps import evaluation_rows
from cliplens.models import load_model
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    set_gallery_pdf(snakemake.params.gallery_pdf)
    params, outputs = snakemake.params, snakemake.output
    cfg = params.explain
    manifest = read_manifest(snakemake.input.manifest)
    shown = evaluation_rows(manifest, cfg["max_images"])["image_id"].tolist()[: cfg["figure_images"]]
    loaded = load_model(params.model, snakemake.resources.device)
    pixels = load_pixels(loaded, manifest, shown, square_transform(cfg["image_size"], cfg["resize_mode"]), cfg["image_size"])
    maps = prompt_maps(loaded, pixels, cfg["prompts"], cfg)
    overlay_grid(as_images(pixels), maps, cfg["prompts"], outputs.figure, random_weights=params.random_weights)
    points = prompt_points(maps["surgery"] if "surgery" in maps else next(iter(maps.values())), shown, cfg["prompts"])
    write_table(points, outputs.points)
    log.info("prompt maps of %d images x %d prompts; %d point prompts", len(shown), len(cfg["prompts"]), len(points))
