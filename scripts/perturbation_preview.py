"""Preview one perturbation family: the first dataset image at every severity (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.perturbation.embedding import perturbed_views
from cliplens.perturbation.families import resolve_params
from cliplens.perturbation.figures import plot_family_preview
from cliplens.perturbation.grid import CLEAN_SPEC, family_specs
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    grid = snakemake.params.perturbation
    manifest = read_manifest(snakemake.input.manifest)
    with_masks = manifest[manifest["mask_path"].notna()]
    rows = (with_masks if len(with_masks) else manifest).head(1)
    specs = [CLEAN_SPEC] + family_specs(grid["family"], grid["severities"], grid["seeds"][:1], grid["params"])
    views = perturbed_views(rows, specs, backend=grid["backend"])
    parameters = resolve_params(grid["family"], grid["params"])
    plot_family_preview(views, rows["image_id"].iloc[0], grid["family"], snakemake.output[0], parameters)
