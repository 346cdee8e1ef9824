"""Configured queries: property-based and per-head neighbours, topic and contrastive maps (Snakemake script)."""

import numpy as np
import pandas as pd

from cliplens.datasets import read_manifest
from cliplens.figure_files import set_gallery_pdf
from cliplens.images import as_images, load_pixels
from cliplens.interpret.contributions import ContributionStore
from cliplens.interpret.figures import plot_head_maps, plot_neighbour_rows
from cliplens.interpret.labels import head_labels_from_frame
from cliplens.interpret.neighbours import (
    head_image_neighbour_rows,
    head_text_neighbour_rows,
    property_neighbour_rows,
    query_heads,
    query_images,
)
from cliplens.interpret.token_maps import contrastive_maps, head_token_terms, topic_maps
from cliplens.models import load_model
from cliplens.runtime import job_logging
from cliplens.text import encode_texts

with job_logging(snakemake.log[0], snakemake.threads) as log:
    set_gallery_pdf(snakemake.params.gallery_pdf)
    params, outputs = snakemake.params, snakemake.output
    queries, random_weights = params.queries, params.random_weights
    store = ContributionStore(snakemake.input.store)
    loaded = load_model(params.model, snakemake.resources.device)
    asked = query_images(store, queries["images"])
    k = min(params.k, len(store) - 1)
    heads = query_heads(queries["heads"], store)
    text_embeddings = encode_texts(loaded, queries["texts"], params.templates)
    searches = {
        outputs.properties: (
            property_neighbour_rows(
                store, head_labels_from_frame(pd.read_csv(snakemake.input.labels)), asked, queries["properties"], k
            ),
            "no head carries any of the queried properties",
        ),
        outputs.head_images: (head_image_neighbour_rows(store, heads, asked, k), "no query image"),
        outputs.head_texts: (
            head_text_neighbour_rows(store, heads, queries["texts"], text_embeddings, k),
            "no query text configured",
        ),
    }
    shown = np.unique(np.concatenate([asked, *(rows.indices.ravel() for rows, _ in searches.values())]))
    pixels = load_pixels(loaded, manifest=read_manifest(snakemake.input.manifest), ids=store.ids[shown])
    images = as_images(pixels)
    for path, (rows, empty_message) in searches.items():
        plot_neighbour_rows(rows, images, shown, path, empty_message, random_weights)

    position = np.searchsorted(shown, asked)
    head_tokens, layers, grid = head_token_terms(loaded, pixels[position], params.layers, params.constant_split)
    topics = topic_maps(head_tokens, text_embeddings, grid)  # [Q, n, H, T, gh, gw]
    pairs = queries["contrastive"]
    pair_texts = encode_texts(loaded, [text for pair in pairs for text in pair], params.templates).reshape(len(pairs), 2, -1)
    for q, image_id in enumerate(store.ids[asked]):
        for t, text in enumerate(queries["texts"]):
            plot_head_maps(
                images[position[q]],
                topics[q, :, :, t],
                layers,
                f"{image_id}: '{text}'",
                outputs[f"topic_maps_image{q}_text{t}"],
                random_weights=random_weights,
            )
        for j, ((first, second), (one, other)) in enumerate(zip(pairs, pair_texts)):
            maps = contrastive_maps(head_tokens[q : q + 1], one, other, grid)[0]
            plot_head_maps(
                images[position[q]],
                maps,
                layers,
                f"{image_id}: '{first}' - '{second}'",
                outputs[f"contrastive_maps_image{q}_pair{j}"],
                diverging=True,
                random_weights=random_weights,
            )
    log.info(
        "queries: images %s, %d heads, k=%d, %d texts, %d contrastive pairs",
        list(store.ids[asked]),
        len(heads),
        k,
        len(text_embeddings),
        len(pairs),
    )
