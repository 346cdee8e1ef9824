"""Zero-shot segmentation from the decomposition: class maps and their figure (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.explain import evaluation_rows
from cliplens.interpretation_job import plot_segmentation, segmentation_scores
from cliplens.models import load_model
from cliplens.runtime import job_logging
from cliplens.store import read_embeddings

with job_logging(snakemake.log[0], snakemake.threads) as log:
    params, resources, outputs = snakemake.params, snakemake.resources, snakemake.output
    cfg = params.segmentation
    manifest = read_manifest(snakemake.input.manifest)
    _, class_embeddings = read_embeddings(snakemake.input.labels)
    loaded = load_model(params.model)
    scores = segmentation_scores(
        loaded, evaluation_rows(manifest, params.max_images), manifest.attrs["label_names"], class_embeddings,
        params.layers, cfg["resize_mode"], resources.batch_size, resources.num_workers,
    )
    scores.save(outputs.maps, loaded.is_random)
    plot_segmentation(loaded, scores.head(cfg["figure_images"]), manifest, cfg["resize_mode"], outputs.figure, params.random_weights)
    log.info("class maps of %d images x %d classes", len(scores.image_ids), len(scores.labels))
