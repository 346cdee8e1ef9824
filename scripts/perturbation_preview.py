"""Preview one perturbation family: the first dataset image at every severity (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.embed import perturbed_views
from cliplens.grid import family_specs
from cliplens.perturbation_figures import plot_family_preview
from cliplens.runtime import job_logging

with job_logging(snakemake.log[0]):
    grid = snakemake.params.perturbation
    manifest = read_manifest(snakemake.input.manifest)
    rows = manifest[manifest["mask_path"].notna()].head(1) if manifest["mask_path"].notna().any() else manifest.head(1)
    specs = family_specs(grid["family"], grid["severities"], grid["seeds"][:1], grid["params"])
    specs = family_specs("clean", [], [], {}) + specs
    views = perturbed_views(rows, specs, backend=grid["backend"])
    plot_family_preview(views, rows["image_id"].iloc[0], grid["family"], snakemake.output[0])
