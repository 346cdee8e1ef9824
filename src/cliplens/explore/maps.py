"""Maps view: raw CLIP, CLIP Surgery and Grad-CAM maps of any typed prompt on a stored image.

A prompt that is one of the image labels the workflow mapped is read from ``maps.npz``; any other
prompt is computed on demand (the model is loaded then) and cached.
"""

from __future__ import annotations

import functools

import gradio as gr
import numpy as np

import cliplens.explain.methods  # noqa: F401  (registers raw, surgery and gradcam)
from cliplens.explain.methods import prompt_maps
from cliplens.explore.data import Run, as_pil, overlay
from cliplens.stored_maps import ExplanationScores

METHODS = ("raw", "surgery", "gradcam")


@functools.lru_cache(maxsize=8)
def stored_maps(run: Run) -> ExplanationScores | None:
    path = run.folder("explain") / "maps.npz"
    return ExplanationScores.load(path) if path.is_file() else None


@functools.lru_cache(maxsize=256)
def prompt_map(run: Run, image_id: str, prompt: str) -> tuple[dict[str, np.ndarray], bool]:
    """Maps [H, W] per method of one prompt on one image, and whether they were stored (not computed)."""
    stored = stored_maps(run)
    if stored is not None and image_id in stored.image_ids and prompt in stored.labels:
        i, j = stored.image_ids.index(image_id), stored.labels.index(prompt)
        return {m: stored.pair_maps(m, [i], [j])[0] for m in METHODS if m in stored.scores}, True
    cfg = {**run.cfg["explain"], "methods": [m for m in METHODS if m in run.cfg["explain"]["methods"]]}
    loaded = run.loaded()
    pixels = run.pixels([image_id], cfg["image_size"], cfg["resize_mode"]).to(loaded.device)
    maps = prompt_maps(loaded, pixels, [prompt], cfg)
    return {m: maps[m][0, 0].detach().cpu().numpy() for m in maps}, False


def show(run: Run, image_id: str, prompt: str) -> tuple[str, list[tuple[object, str]]]:
    """The view's text and its gallery: the image, then one overlay per method."""
    prompt = prompt.strip()
    if not prompt:
        return run.banner() + "\n\nType a prompt.", []
    maps, was_stored = prompt_map(run, image_id, prompt)
    size = next(iter(maps.values())).shape
    image = run.pixels([image_id], size[0], run.cfg["explain"]["resize_mode"])
    array = image[0].permute(1, 2, 0).numpy()
    gallery: list[tuple[object, str]] = [(as_pil(image)[0], image_id)]
    gallery += [(overlay(array, maps[m]), f"{m}: '{prompt}'") for m in maps]
    source = "stored by the workflow" if was_stored else "computed now (cached)"
    return f"{run.banner()}\n\nMaps of **'{prompt}'** on `{image_id}`: {', '.join(maps)}, {source}.", gallery


def build(runs: dict[str, Run], run_choice: gr.Dropdown) -> None:
    """The maps tab."""
    first = next(iter(runs.values()))
    with gr.Tab("Maps", id="maps"):
        with gr.Row():
            image = gr.Dropdown(first.image_ids, value=first.image_ids[0], label="image", elem_id="maps-image")
            prompt = gr.Textbox(label="prompt (any text)", elem_id="maps-prompt", scale=2)
            go = gr.Button("Show maps", elem_id="maps-go", variant="primary")
        text = gr.Markdown(first.banner(), elem_id="maps-text")
        gallery = gr.Gallery(label="image, raw, surgery, gradcam", columns=4, height=300, elem_id="maps-gallery")
        inputs = [run_choice, image, prompt]
        go.click(lambda r, i, p: show(runs[r], i, p), inputs, [text, gallery])
        prompt.submit(lambda r, i, p: show(runs[r], i, p), inputs, [text, gallery])
        run_choice.change(lambda r: gr.update(choices=runs[r].image_ids, value=runs[r].image_ids[0]), run_choice, image)
