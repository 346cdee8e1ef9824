"""The interactive explorer (``cliplens explore``): a Gradio app over the results a workflow stored.

An application layer above the analysis lines: it reads what the lines wrote and calls them to
compute what was not stored (maps of a new prompt, topic maps, text searches), loading the model
only then. One module per view, plus :mod:`cliplens.explore.data` for reading the stored files.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from cliplens.explore import heads, maps, perturbations, search
from cliplens.explore.data import Run, find_runs


def build_app(results: Path) -> gr.Blocks:
    """The explorer over a results folder (one tab per view whose results exist)."""
    runs = {run.key: run for run in find_runs(Path(results))}
    if not runs:
        raise FileNotFoundError(f"no results under {results}: run the workflow first (cliplens run)")
    first = next(iter(runs.values()))
    with gr.Blocks(title="cliplens explorer", analytics_enabled=False) as app:
        gr.Markdown("# cliplens explorer")
        run_choice = gr.Dropdown(list(runs), value=first.key, label="model · dataset", elem_id="run")
        with gr.Tabs():
            if first.has("perturbation", "per_image.parquet"):
                perturbations.build(runs, run_choice)
            if first.has("explain"):
                maps.build(runs, run_choice)
            if first.has("interpret", "textspan.csv"):
                heads.build(runs, run_choice)
                search.build(runs, run_choice)
    return app


def launch(results: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
    """Serve the explorer until interrupted, printing its address (and not Gradio's hint on public links)."""
    app = build_app(results)
    app.launch(server_name=host, server_port=port, ssr_mode=False, quiet=True, prevent_thread_lock=True)
    print(f"cliplens explorer of {results}: {app.local_url} (Ctrl-C stops it)", flush=True)
    app.block_thread()


__all__ = ["Run", "build_app", "launch"]
