"""Head-level ground truth on the planted world: head attributes, mean-ablation, spurious cue (Snakemake script)."""

from cliplens.interpret.groundtruth import (
    ablation_effects,
    attribute_text_embeddings,
    decompose_all,
    head_attributes,
    head_expectations,
    labelled_heads,
    planted_text_pool,
    plot_head_groundtruth,
    spurious_cue,
)
from cliplens.io import write_table
from cliplens.models import load_model
from cliplens.planted import PlantedConfig, generate_split
from cliplens.runtime import job_logging
from cliplens.text import encode_prompts

with job_logging(snakemake.log[0], snakemake.threads) as log:
    params, outputs = snakemake.params, snakemake.output
    world = PlantedConfig.from_mapping(params.model["world"])
    vocabularies = world.vocabularies()
    loaded = load_model(params.model, snakemake.resources.device)
    pool = planted_text_pool(vocabularies, params.distractors)
    attribute_texts = {a: attribute_text_embeddings(loaded, vocabularies, a) for a in ("colour", "shape")}

    images, _, records = generate_split(world, "test")
    contributions = decompose_all(loaded, images, ids=records["image_id"])
    textspan = params.textspan
    pool_embeddings = encode_prompts(loaded, pool["text"].tolist())
    heads = head_attributes(
        contributions, pool_embeddings, pool, textspan["top_m"], textspan["rank"], textspan.get("criterion", "reference")
    )
    ablation = ablation_effects(contributions, records, attribute_texts, vocabularies, heads)

    shifted_images, _, shifted = generate_split(world, "test_shifted")
    spurious = spurious_cue(
        decompose_all(loaded, shifted_images, ids=shifted["image_id"]),
        shifted,
        attribute_texts["shape"],
        labelled_heads(heads, "background"),
        vocabularies["shape"],
        vocabularies["background"],
    )
    expectations = head_expectations(ablation, spurious)

    for name, table in (("heads", heads), ("ablation", ablation), ("spurious", spurious), ("expectations", expectations)):
        write_table(table, outputs[name])
    plot_head_groundtruth(heads, ablation, outputs.figure, random_weights=params.random_weights)
    log.info(
        "head attributes over %d test images, pool of %d texts: %s\n%s",
        len(records),
        len(pool),
        heads["attribute"].value_counts().to_dict(),
        expectations.to_string(),
    )
