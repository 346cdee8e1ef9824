"""Preview every perturbation family of the grid: the first dataset image at every severity (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.perturbation.embedding import perturbed_views
from cliplens.perturbation.families import resolve_params
from cliplens.perturbation.figures import plot_family_preview
from cliplens.perturbation.grid import family_specs
from cliplens.plotting import set_gallery_pdf
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    params = snakemake.params
    set_gallery_pdf(params.gallery_pdf)
    manifest = read_manifest(snakemake.input.manifest)
    with_masks = manifest[manifest["mask_path"].notna()]
    rows = (with_masks if len(with_masks) else manifest).head(1)
    grids = params.families
    specs = {
        family: family_specs(family, grid["severities"], grid["seeds"][:1], grid["params"]) for family, grid in grids.items()
    }
    views = perturbed_views(rows, specs, backend=params.backend)
    image_id = rows["image_id"].iloc[0]
    for family, grid in grids.items():
        parameters = resolve_params(family, grid["params"])
        plot_family_preview(views[family], image_id, family, snakemake.output[f"preview_{family}"], parameters)
