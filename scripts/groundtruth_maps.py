"""Every explanation method's maps scored against the planted objects' masks, beside baselines (Snakemake script)."""

import torch

import cliplens.explain.methods  # noqa: F401  (registers raw, surgery and gradcam)
import cliplens.interpret.token_maps  # noqa: F401  (registers the decomposition's class maps)
from cliplens.groundtruth import evaluate_maps, map_expectations, object_texts, summarise_maps
from cliplens.io import write_table
from cliplens.models import load_model
from cliplens.planning import decomposable
from cliplens.planted import PlantedConfig, generate_split
from cliplens.plotting import summary_figure
from cliplens.runtime import job_logging
from cliplens.text import encode_prompts

with job_logging(snakemake.log[0], snakemake.threads) as log:
    params, outputs = snakemake.params, snakemake.output
    world = PlantedConfig.from_mapping(params.dataset["world"])
    images, masks, records = generate_split(world, params.dataset["split"])
    loaded = load_model(params.model, snakemake.resources.device)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(loaded.device)
    vocabularies = world.vocabularies()
    text = encode_prompts(loaded, object_texts(vocabularies))
    methods = list(params.explain["methods"]) + (["decomposition"] if decomposable(params.model) else [])
    settings = {**params.explain, **params.interpret}
    per_object = evaluate_maps(loaded, methods, pixels, masks, records, vocabularies, text, settings)
    summary = summarise_maps(per_object, params.explain["evaluation"]["n_boot"])
    write_table(per_object, outputs.per_object)
    write_table(summary, outputs.summary)
    write_table(map_expectations(summary), outputs.expectations)
    figure_table = summary.assign(model=snakemake.wildcards.model)
    summary_figure(figure_table, outputs.figure, group="model", hue="method", random_weights=params.random_weights)
    log.info("maps of %d objects by %s\n%s", len(per_object) // (len(methods) + 2), methods, summary.to_string())
