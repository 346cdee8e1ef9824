"""Zero-shot segmentation from the decomposition: class maps and their figure (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.figure_files import set_gallery_pdf
from cliplens.images import as_images, load_pixels, square_transform
from cliplens.interpret.token_maps import METHOD, segmentation_scores
from cliplens.io import read_embeddings
from cliplens.maps import evaluation_rows
from cliplens.models import load_model
from cliplens.runtime import job_logging
from cliplens.stored_maps import plot_segmentation

with job_logging(snakemake.log[0], snakemake.threads) as log:
    set_gallery_pdf(snakemake.params.gallery_pdf)
    params, resources, outputs = snakemake.params, snakemake.resources, snakemake.output
    cfg = params.segmentation
    manifest = read_manifest(snakemake.input.manifest)
    _, class_embeddings = read_embeddings(snakemake.input.labels)
    loaded = load_model(params.model, snakemake.resources.device)
    scores = segmentation_scores(
        loaded,
        evaluation_rows(manifest, params.max_images),
        manifest.attrs["label_names"],
        class_embeddings,
        params.layers,
        cfg["resize_mode"],
        resources.batch_size,
        resources.num_workers,
        params.constant_split,
    )
    scores.save(outputs.maps, loaded.is_random)
    shown = scores.image_ids[: cfg["figure_images"]]
    images = as_images(load_pixels(loaded, manifest, shown, square_transform(loaded.image_size, cfg["resize_mode"])))
    plot_segmentation(scores, METHOD, images, manifest, cfg["resize_mode"], outputs.figure, params.random_weights)
    log.info("class maps of %d images x %d classes", len(scores.image_ids), len(scores.labels))
