"""Zero-shot accuracy per planted attribute under every family x severity, and its expectations (Snakemake script)."""

from cliplens.datasets import read_manifest
from cliplens.io import read_embeddings, write_table
from cliplens.models import load_model
from cliplens.perturbation.figures import plot_attribute_accuracy
from cliplens.perturbation.groundtruth import ATTRIBUTES, attribute_accuracy, perturbation_expectations
from cliplens.runtime import job_logging
from cliplens.text import encode_labels
from cliplens.training import attribute_templates

with job_logging(snakemake.log[0], snakemake.threads) as log:
    inputs, outputs, params = snakemake.input, snakemake.output, snakemake.params
    manifest = read_manifest(inputs.manifest)
    vocabularies = manifest.attrs["vocabularies"]
    loaded = load_model(params.model, snakemake.resources.device)
    attribute_texts = {
        a: (vocabularies[a], encode_labels(loaded, vocabularies[a], attribute_templates(vocabularies, a)).numpy())
        for a in ATTRIBUTES
    }
    files = [path for name in inputs.keys() if name == "clean" or name.startswith("perturbed_") for path in inputs[name]]
    rows, embeddings = read_embeddings(files)
    table = attribute_accuracy(rows, embeddings, manifest, attribute_texts)
    expectations = perturbation_expectations(table)
    write_table(table, outputs.table)
    write_table(expectations, outputs.expectations)
    plot_attribute_accuracy(table, outputs.figure, model=snakemake.wildcards.model, random_weights=params.random_weights)
    log.info("attribute accuracy under %d families\n%s", table["family"].nunique() - 1, expectations.to_string())
