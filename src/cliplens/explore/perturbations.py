"""Perturbations view: each image beside its perturbed versions, with similarity, zero-shot and drift numbers."""

from __future__ import annotations

import functools

import gradio as gr
import pandas as pd
from PIL import Image

from cliplens.explore.data import DISPLAY_SIZE, Run
from cliplens.perturbation.grid import family_specs
from cliplens.perturbation.views import perturbed_views

SHOWN = 4
"""Images shown beside their perturbed versions (the most susceptible first when sorted)."""
COLUMNS = ["image_id", "label", "self_similarity", "alignment_change", "predicted", "top1", "true_prob", "susceptibility"]


def families(run: Run) -> list[str]:
    return sorted(run.table("perturbation", "per_image.parquet").query("family != 'clean'")["family"].unique())


def severities(run: Run) -> list[int]:
    return sorted(int(s) for s in run.table("perturbation", "per_image.parquet").query("severity > 0")["severity"].unique())


def image_table(run: Run, family: str, severity: int, by_susceptibility: bool) -> pd.DataFrame:
    """One row per image: the stored per-image numbers at (family, severity), seed-averaged, with drift and susceptibility."""
    per_image = run.table("perturbation", "per_image.parquet")
    rows = per_image[(per_image["family"] == family) & (per_image["severity"] == severity)]
    numbers = ["self_similarity", "alignment_change", "top1", "true_prob", "prediction"]
    table = rows.groupby("image_id", sort=False)[numbers].agg(
        {"self_similarity": "mean", "alignment_change": "mean", "top1": "mean", "true_prob": "mean", "prediction": "first"}
    )
    names = run.manifest.attrs.get("label_names") or []
    table["predicted"] = [names[int(p)] if int(p) < len(names) else int(p) for p in table["prediction"]]
    table["label"] = run.manifest.loc[table.index, "label"].to_numpy()
    susceptible = run.table("perturbation", "susceptibility.parquet")
    susceptible = susceptible[susceptible["family"] == family].set_index("image_id")["susceptibility"]
    table["susceptibility"] = susceptible.reindex(table.index).to_numpy()
    drift_files = sorted(run.folder("perturbation").glob("drift_*.parquet"))
    columns = list(COLUMNS)
    for path in drift_files:
        drift = run.table("perturbation", path.name)
        drift = drift[(drift["family"] == family) & (drift["severity"] == severity)].set_index("image_id")
        name = path.stem.removeprefix("drift_")
        table[f"drift JS ({name})"] = drift["js_divergence"].reindex(table.index).to_numpy()
        table[f"top drift label ({name})"] = drift["top_label"].reindex(table.index).to_numpy()
        columns += [f"drift JS ({name})", f"top drift label ({name})"]
    table = table.reset_index()[columns]
    return table.sort_values("susceptibility", ascending=False, kind="stable") if by_susceptibility else table


@functools.lru_cache(maxsize=64)
def perturbed_images(run: Run, family: str, image_ids: tuple[str, ...]) -> list[list[Image.Image]]:
    """Per image: the clean picture, then one per analysed severity (first configured seed), made
    as the figures of the perturbation line make them (:func:`perturbed_views`)."""
    grid = run.cfg["perturbation"]
    specs = {family: family_specs(family, severities(run), grid["seeds"][:1], grid["families"].get(family) or {})}
    rows = run.manifest.loc[list(image_ids)].reset_index(drop=True)
    views = dict(perturbed_views(rows, specs, DISPLAY_SIZE, grid["backend"]))[family]
    levels = [0, *severities(run)]
    return [[Image.fromarray(views[image_id, level]) for level in levels] for image_id in image_ids]


def show(run: Run, family: str, severity: int, by_susceptibility: bool) -> tuple[str, pd.DataFrame, list]:
    """The view's text, table and gallery."""
    table = image_table(run, family, int(severity), by_susceptibility)
    shown = tuple(table["image_id"].head(SHOWN))
    gallery = []
    for image_id, pictures in zip(shown, perturbed_images(run, family, shown)):
        captions = ["clean"] + [f"severity {s}" for s in severities(run)][: len(pictures) - 1]
        gallery += [(picture, f"{image_id}: {caption}") for picture, caption in zip(pictures, captions)]
    order = "most susceptible first" if by_susceptibility else "dataset order"
    text = (
        f"{run.banner()}\n\n**{family}** at severity **{severity}**: {len(table)} images, {order}. "
        f"Mean self-similarity {table['self_similarity'].mean():.3f}, zero-shot top-1 {table['top1'].mean():.2f}. "
        f"The first {len(shown)} are shown clean and at every severity (224 px; the analysis perturbs at the model's input size)."
    )
    return text, table.round(4), gallery


def build(runs: dict[str, Run], run_choice: gr.Dropdown) -> None:
    """The perturbations tab."""
    first = next(iter(runs.values()))
    names, levels = families(first), severities(first)
    with gr.Tab("Perturbations", id="perturbations"):
        with gr.Row():
            family = gr.Dropdown(names, value=names[0], label="family", elem_id="perturbations-family")
            severity = gr.Dropdown(levels, value=levels[-1], label="severity", elem_id="perturbations-severity")
            ordered = gr.Checkbox(True, label="sort by susceptibility", elem_id="perturbations-sort")
            go = gr.Button("Show", elem_id="perturbations-go", variant="primary")
        text = gr.Markdown(first.banner(), elem_id="perturbations-text")
        gallery = gr.Gallery(label="clean and perturbed", columns=1 + len(levels), height=420, elem_id="perturbations-gallery")
        table = gr.Dataframe(label="per image", elem_id="perturbations-table")
        inputs = [run_choice, family, severity, ordered]
        go.click(lambda r, f, s, o: show(runs[r], f, s, o), inputs, [text, table, gallery])
