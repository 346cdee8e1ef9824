"""The perturbation figures that show images (Snakemake script): per family, a preview of one dataset
image at every severity and, on a labelled dataset, each model's susceptibility gallery. Every
image is decoded once and perturbed once per cell, whichever figures show it; one family's images
are held at a time."""

import pandas as pd

from cliplens.datasets import read_manifest
from cliplens.figure_files import set_gallery_pdf
from cliplens.perturbation.families import resolve_params
from cliplens.perturbation.galleries import plot_family_preview, plot_susceptibility_gallery
from cliplens.perturbation.grid import family_specs
from cliplens.perturbation.views import perturbed_views
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    inputs, outputs, params = snakemake.input, snakemake.output, snakemake.params
    set_gallery_pdf(params.gallery_pdf)
    manifest = read_manifest(inputs.manifest)
    with_masks = manifest[manifest["mask_path"].notna()]
    previewed = (with_masks if len(with_masks) else manifest)["image_id"].iloc[0]
    tops = {model: pd.read_csv(path, dtype={"image_id": str}) for model, path in zip(params.models, inputs.top_k)}
    grids = params.families
    shown = {
        family: {previewed, *(image_id for top in tops.values() for image_id in top.loc[top["family"] == family, "image_id"])}
        for family in grids
    }
    specs = {
        family: family_specs(family, grid["severities"], grid["seeds"][:1], grid["params"]) for family, grid in grids.items()
    }
    rows = manifest[manifest["image_id"].isin(set().union(*shown.values()))]
    per_image = {model: pd.read_parquet(path) for model, path in zip(params.models, inputs.per_image)}
    for family, views in perturbed_views(rows, specs, params.image_size, params.backend, shown):
        grid = grids[family]
        plot_family_preview(views, previewed, family, outputs[f"preview_{family}"], resolve_params(family, grid["params"]))
        for model, random_weights in params.models.items():
            plot_susceptibility_gallery(
                tops[model],
                views,
                outputs[f"susceptibility_{model}_{family}"],
                family=family,
                severities=[0, *sorted(grid["severities"])],
                per_image=per_image[model],
                dataset=snakemake.wildcards.dataset,
                random_weights=random_weights,
            )
    log.info("previews and %d models' galleries of %d families (%d images)", len(tops), len(grids), len(rows))
