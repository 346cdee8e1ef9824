"""Search view: a property or any text -> the heads that carry it and the nearest images by those heads."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from cliplens.explore.data import Run, as_pil
from cliplens.explore.heads import store, text_embedding
from cliplens.interpret.labels import head_labels_from_frame
from cliplens.interpret.neighbours import property_neighbours

TOP_HEADS = 3
K = 5


def properties(run: Run) -> list[str]:
    if not run.has("interpret", "head_labels.csv"):
        return []
    return head_labels_from_frame(run.table("interpret", "head_labels.csv")).properties


def search(run: Run, query: str, image_id: str) -> tuple[str, pd.DataFrame, list]:
    """Heads carrying the query and the images nearest by them.

    A property name selects the heads labelled with it, and images are ranked by the sum of those
    heads' contributions around ``image_id``. Any other text is encoded; a head carries it in
    proportion to how much its contribution varies along the text across images (standard
    deviation of the projection), and images are ranked by the top heads' projection on the text.
    """
    query = query.strip()
    contributions = store(run)
    ids = contributions.ids.tolist()
    heads = contributions.load().heads  # [N, n, H, D]
    layers = list(contributions.head_layers)
    k = min(K, len(ids) - 1)
    if query in properties(run):
        labels = head_labels_from_frame(run.table("interpret", "head_labels.csv"))
        mask = labels.head_mask(query, layers, contributions.num_heads)
        table = pd.DataFrame([(layers[n], h) for n, h in zip(*np.nonzero(mask))], columns=["layer", "head"])
        table["carries"] = f"labelled {query}"
        if not mask.any():
            return f"{run.banner()}\n\nNo head is labelled **{query}**.", table, []
        query_index = ids.index(image_id) if image_id in ids else 0
        order, scores = property_neighbours(heads, mask, [query_index], k)
        found = [(ids[i], s) for i, s in zip(order[0], scores[0])]
        what = f"images nearest to `{ids[query_index]}` by the heads labelled **{query}**"
    else:
        projection = np.einsum("bnhd,d->bnh", heads, text_embedding(run, query))  # [N, n, H]
        spread = projection.std(axis=0)
        best = np.argsort(-spread, axis=None)[:TOP_HEADS]
        rows = [np.unravel_index(b, spread.shape) for b in best]
        table = pd.DataFrame({"layer": [layers[n] for n, _ in rows], "head": [h for _, h in rows]})
        table["carries"] = [f"std of projection {spread[n, h]:.3f}" for n, h in rows]
        score = sum(projection[:, n, h] for n, h in rows)
        order = np.argsort(-score)[:k]
        found = [(ids[i], float(score[i])) for i in order]
        what = f"images with the highest projection on **'{query}'** by those heads"
    pictures = as_pil(run.pixels([i for i, _ in found]))
    gallery = [(p, f"{i} ({s:.2f})") for p, (i, s) in zip(pictures, found)]
    return f"{run.banner()}\n\nHeads carrying **'{query}'**; {what}.", table, gallery


def build(runs: dict[str, Run], run_choice: gr.Dropdown) -> None:
    """The search tab."""
    first = next(iter(runs.values()))
    with gr.Tab("Search", id="search"):
        gr.Markdown("Properties: " + ", ".join(f"`{p}`" for p in properties(first)) + " — or type any text.")
        with gr.Row():
            query = gr.Textbox(label="property or text", elem_id="search-query", scale=2)
            image = gr.Dropdown(
                first.image_ids, value=first.image_ids[0], label="query image (properties)", elem_id="search-image"
            )
            go = gr.Button("Search", elem_id="search-go", variant="primary")
        header = gr.Markdown(first.banner(), elem_id="search-text")
        heads = gr.Dataframe(label="heads", elem_id="search-heads")
        gallery = gr.Gallery(label="nearest images", columns=5, height=220, elem_id="search-gallery")
        go.click(lambda r, q, i: search(runs[r], q, i), [run_choice, query, image], [header, heads, gallery])
        query.submit(lambda r, q, i: search(runs[r], q, i), [run_choice, query, image], [header, heads, gallery])
