"""Heads view: one attention head's TEXTSPAN texts, property label, nearest images and texts, and topic map."""

from __future__ import annotations

import functools

import gradio as gr
import numpy as np
import pandas as pd

from cliplens.explore.data import Run, as_pil, overlay
from cliplens.interpret.contributions import ContributionStore
from cliplens.interpret.neighbours import head_image_neighbours, nearest_neighbours
from cliplens.interpret.token_maps import head_token_terms, topic_maps
from cliplens.io import read_pool_embeddings
from cliplens.planning import pool_key
from cliplens.text import encode_texts

K = 5


@functools.lru_cache(maxsize=8)
def store(run: Run) -> ContributionStore:
    return ContributionStore(run.folder("interpret") / "contributions")


@functools.lru_cache(maxsize=8)
def pool(run: Run) -> tuple[list[str], np.ndarray]:
    """The TEXTSPAN text pool of the run's model: texts and embeddings."""
    key = pool_key(run.cfg["interpret"]["textspan"]["pool"])
    return read_pool_embeddings(run.results / "text" / f"model={run.model}" / f"pool-{key}.parquet")


@functools.lru_cache(maxsize=64)
def text_embedding(run: Run, text: str) -> np.ndarray:
    """A typed text's embedding [D] (loads the model)."""
    return encode_texts(run.loaded(), [text], run.cfg["interpret"]["textspan"]["templates"])[0]


def heads_of(run: Run) -> list[tuple[int, int]]:
    """The (layer, head) pairs TEXTSPAN described."""
    spans = run.table("interpret", "textspan.csv")
    return sorted({(int(layer), int(head)) for layer, head in spans[["layer", "head"]].to_numpy()})


def head_summary(run: Run, layer: int, head: int) -> tuple[str, pd.DataFrame]:
    """The head's label line and its TEXTSPAN texts with the variance each explains."""
    spans = run.table("interpret", "textspan.csv")
    texts = spans[(spans["layer"] == layer) & (spans["head"] == head)].sort_values("rank")
    line = f"Layer {layer}, head {head}"
    if run.has("interpret", "head_labels.csv"):
        labels = run.table("interpret", "head_labels.csv")
        row = labels[(labels["layer"] == layer) & (labels["head"] == head)]
        if len(row):
            line += f": property **{row['label'].iloc[0]}** (consistency {row['consistency'].iloc[0]:.2f})"
    return line, texts[["rank", "text", "variance_explained"]].reset_index(drop=True).round(4)


@functools.lru_cache(maxsize=64)
def topic_map(run: Run, layer: int, head: int, image_id: str, text: str) -> np.ndarray:
    """The head's topic map [gh, gw] of a text on one image (loads the model)."""
    loaded = run.loaded()
    layers = run.cfg["interpret"]["layers"]
    pixels = run.pixels([image_id], loaded.image_size).to(loaded.device)
    tokens, token_layers, grid = head_token_terms(loaded, pixels, layers, run.cfg["interpret"]["constant_split"])
    maps = topic_maps(tokens, text_embedding(run, text)[None], grid)  # [1, n, H, 1, gh, gw]
    return maps[0, list(token_layers).index(layer), head, 0]


def show(run: Run, head_choice: str, image_id: str, text: str) -> tuple[str, pd.DataFrame, list, pd.DataFrame, list]:
    """Label line, TEXTSPAN table, nearest images, nearest texts and (if a text is typed) the topic map."""
    layer, head = (int(v) for v in head_choice.split(":"))
    line, spans = head_summary(run, layer, head)
    contributions = store(run)
    ids = contributions.ids.tolist()
    matrix = contributions.head_matrix(layer, head)
    query = ids.index(image_id) if image_id in ids else 0
    k = min(K, len(ids) - 1)
    indices, scores = head_image_neighbours(matrix, [query], k)
    neighbour_ids = [ids[i] for i in indices[0]]
    pictures = as_pil(run.pixels(neighbour_ids))
    nearest = [(p, f"{i} ({s:.2f})") for p, i, s in zip(pictures, neighbour_ids, scores[0])]
    texts, embeddings = pool(run)
    order, similarity = nearest_neighbours(matrix[[query]], embeddings, min(K, len(texts)))
    near_texts = pd.DataFrame({"text": [texts[i] for i in order[0]], "cosine": similarity[0]}).round(4)
    topic: list = []
    if text.strip():
        heat = topic_map(run, layer, head, ids[query], text.strip())
        image = run.pixels([ids[query]])[0].permute(1, 2, 0).numpy()
        size = image.shape[0]
        heat = np.kron(heat, np.ones((size // heat.shape[0] + 1, size // heat.shape[1] + 1)))[:size, :size]
        topic = [(overlay(image, heat), f"topic map of '{text.strip()}' on {ids[query]}")]
    header = f"{run.banner()}\n\n{line}. Nearest images to `{ids[query]}` by this head; nearest pool texts to its contribution."
    return header, spans, nearest, near_texts, topic


def build(runs: dict[str, Run], run_choice: gr.Dropdown) -> None:
    """The heads tab."""
    first = next(iter(runs.values()))
    choices = [f"{layer}:{head}" for layer, head in heads_of(first)] if first.has("interpret", "textspan.csv") else []
    with gr.Tab("Heads", id="heads"):
        with gr.Row():
            head = gr.Dropdown(choices, value=choices[-1] if choices else None, label="layer:head", elem_id="heads-head")
            image = gr.Dropdown(first.image_ids, value=first.image_ids[0], label="image", elem_id="heads-image")
            text = gr.Textbox(label="topic map of a text (optional)", elem_id="heads-text", scale=2)
            go = gr.Button("Show head", elem_id="heads-go", variant="primary")
        header = gr.Markdown(first.banner(), elem_id="heads-text-out")
        with gr.Row():
            spans = gr.Dataframe(label="TEXTSPAN texts", elem_id="heads-spans")
            near_texts = gr.Dataframe(label="nearest texts", elem_id="heads-near-texts")
        nearest = gr.Gallery(label="nearest images", columns=5, height=220, elem_id="heads-nearest")
        topic = gr.Gallery(label="topic map", columns=1, height=260, elem_id="heads-topic")
        inputs = [run_choice, head, image, text]
        go.click(lambda r, h, i, t: show(runs[r], h, i, t), inputs, [header, spans, nearest, near_texts, topic])
