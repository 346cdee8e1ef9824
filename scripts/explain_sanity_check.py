"""Sanity check: maps of the image tower randomised block by block from the top (Snakemake script)."""

import cliplens.explain.methods  # noqa: F401  (registers raw, surgery and gradcam)
from cliplens.datasets import read_manifest
from cliplens.explain.figures import sanity_check_figure
from cliplens.explain.sanity import cascade_similarity
from cliplens.images import load_pixels, square_transform
from cliplens.io import write_table
from cliplens.maps import evaluation_rows
from cliplens.models import load_model
from cliplens.runtime import job_logging
from cliplens.text import label_features

with job_logging(snakemake.log[0], snakemake.threads) as log:
    params, outputs = snakemake.params, snakemake.output
    cfg = params.explain
    manifest = read_manifest(snakemake.input.manifest)
    rows = evaluation_rows(manifest, cfg["sanity_check"]["images"])
    loaded = load_model(params.model, snakemake.resources.device)
    pixels = load_pixels(
        loaded, manifest, rows["image_id"].tolist(), square_transform(cfg["image_size"], cfg["resize_mode"]), cfg["image_size"]
    )
    text, _ = label_features(loaded, manifest.attrs["label_names"], cfg["templates"])
    similarity = cascade_similarity(loaded, pixels, text, cfg["methods"], cfg, seed=cfg["sanity_check"]["seed"])
    write_table(similarity.assign(model=snakemake.wildcards.model), outputs.table)
    sanity_check_figure(similarity, outputs.figure, random_weights=params.random_weights)
    log.info("sanity check over %d stages x %s", similarity["stage"].nunique(), cfg["methods"])
