"""End-to-end: the Snakemake workflow with tiny_random, dry runs, reruns after config changes, lint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, SMOKE
from PIL import Image

from cliplens.datasets import read_manifest
from cliplens.io import read_embeddings, read_provenance
from cliplens.perturbation.families import FAMILIES

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, config: list[str] = (), check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow of this repository in ``workdir``."""
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    if config:
        command += ["--config", *config]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def planned_jobs(output: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run lists."""
    jobs = re.findall(r"rule (\w+):\n((?:    .*\n)+)", output)
    return [(rule, (re.search(r"wildcards: (.*)", body) or [None, ""])[1]) for rule, body in jobs]


def test_smoke_run_writes_embeddings_statistics_and_figures(smoke_run):
    results = smoke_run / "results"
    smoke = yaml.safe_load((ROOT / "config/perturbation/smoke.yaml").read_text())
    cells = len(smoke["severities"]) * len(smoke["seeds"])
    store = results / "embeddings/model=tiny_random/dataset=skimage_samples"
    rows, embeddings = read_embeddings(store)
    assert len(rows) == 12 * (1 + cells * len(smoke["families"]))
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=2e-3)
    assert set(rows["perturbation"]) == {"clean", *smoke["families"]}
    provenance = read_provenance(next(store.rglob("*.parquet")))
    assert provenance["random_weights"] and provenance["arch"] == "cliplens-tiny-vit"
    summary = (results / "summary/model=tiny_random/dataset=skimage_samples/summary.md").read_text()
    assert "Random weights" in summary and "| images_embedded | 12 |" in summary
    aggregate = pd.read_csv(results / "perturbation/model=tiny_random/dataset=skimage_samples/aggregate.csv")
    assert set(aggregate["family"]) == {"clean", *smoke["families"]}
    resolved = yaml.safe_load((results / "config/resolved.yaml").read_text())
    assert resolved["model"]["name"] == "tiny_random"
    figures = list((results / "figures").rglob("*.png"))
    assert len(figures) >= 4 + 3 * len(smoke["families"])
    pictures = ("preview_", "susceptibility_", "overlays", "prompt_overlays", "segmentation", "neighbours", "_maps")
    plots = [f for f in figures if not any(part in f.stem or part in f.parent.name for part in pictures)]
    assert plots and all(f.with_suffix(".pdf").exists() for f in plots)  # plots also as vectors
    assert not any(f.with_suffix(".pdf").exists() for f in figures if f not in plots)  # pictures: PNG only


def test_rerun_after_one_family_changes_redoes_only_its_jobs(smoke_run):
    smoke = yaml.safe_load((ROOT / "config/perturbation/smoke.yaml").read_text())
    changed, *others = list(smoke["families"])
    assert others, "the smoke grid needs two families for this test"

    param, values = next(iter(FAMILIES[changed].params.items()))
    edited = [round(v * 0.9, 6) if isinstance(v, float) else v for v in values]
    override = f"perturbation__families__{changed}__{param}=[{','.join(map(str, edited))}]"
    dry = snakemake(smoke_run, "-n", config=SMOKE + [override])
    jobs = planned_jobs(dry.stdout)
    embed = [w for rule, w in jobs if rule == "embed_images"]
    assert embed and all(f"family={changed}" in w for w in embed)
    # figures: one job per dataset (pictures) and per model (plots), rerun through their inputs and params
    assert [rule for rule, _ in jobs].count("perturbation_galleries") == 1
    assert [rule for rule, _ in jobs].count("perturbation_figures") == 1
    assert {rule for rule, _ in jobs} >= {"embed_images", "perturbation_stats"}
    assert "prepare_dataset" not in {rule for rule, _ in jobs}

    stats_only = planned_jobs(
        snakemake(smoke_run, "-n", config=[c for c in SMOKE if not c.startswith("stats")] + ["stats__n_boot=60"]).stdout
    )
    assert "embed_images" not in {rule for rule, _ in stats_only}
    assert "perturbation_stats" in {rule for rule, _ in stats_only}

    # batch size is a resource: only the record of the resolved config is rewritten
    resources_only = planned_jobs(
        snakemake(smoke_run, "-n", config=SMOKE + ["compute__batch_size=7", "compute__num_workers=0"]).stdout
    )
    assert {rule for rule, _ in resources_only} <= {"all"}

    # so is the device: moving the jobs (auto, which is the CPU here, to cpu) reruns only the record of the config
    device_only = planned_jobs(snakemake(smoke_run, "-n", config=SMOKE + ["model__device=cpu"]).stdout)
    assert {rule for rule, _ in device_only} <= {"all", "resolved_config"}


def test_a_family_taken_out_of_the_grid_leaves_no_result_behind(smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, symlinks=True)
    families = list(yaml.safe_load((ROOT / "config/perturbation/smoke.yaml").read_text())["families"])
    removed, kept = families[-1], families[:-1]
    fewer = SMOKE + ["perturbation__families={" + ", ".join(f"{family}: {{}}" for family in kept) + "}"]
    embeddings = run / "results/embeddings/model=tiny_random/dataset=skimage_samples"
    figures = run / "results/figures"
    left_behind = [
        embeddings / f"perturbation={removed}",
        figures / f"dataset=skimage_samples/perturbation/preview_{removed}.png",
        figures / f"model=tiny_random/dataset=skimage_samples/perturbation/drift_{removed}.png",
        figures / f"model=tiny_random/dataset=skimage_samples/perturbation/drift_{removed}.pdf",
    ]
    assert all(path.exists() for path in left_behind)
    snakemake(run, "--cores", "1", "results/config/resolved.yaml", config=fewer)  # a chosen target: nothing removed
    assert all(path.exists() for path in left_behind)
    # the whole workflow with only some rules allowed: the others' files are its inputs, not stale
    snakemake(run, "--cores", "1", "--allowed-rules", "all", "resolved_config", config=fewer)
    assert all(path.exists() for path in left_behind)

    before = {path.relative_to(run) for path in (run / "results").rglob("*") if path.is_file()}
    result = snakemake(run, "--cores", "2", config=fewer)
    assert "results that the current configuration no longer produces" in result.stderr
    assert not any(path.exists() for path in left_behind)
    gone = before - {path.relative_to(run) for path in (run / "results").rglob("*") if path.is_file()}
    assert gone and all(removed in str(path) for path in gone), sorted(gone)  # only the removed family's files
    rows, _ = read_embeddings(embeddings)
    assert set(rows["perturbation"]) == {"clean", *kept}
    assert (run / "results/report.html").exists() == (smoke_run / "results/report.html").exists()  # not a result set


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("explain__prompts=[a dog,the sea]", {"explain_prompt_maps"}),
        ("explain__figure_images=2", {"explain_figures", "explain_prompt_maps"}),
        ("explain__evaluation__n_boot=60", {"explain_evaluation"}),
        ("explain__sanity_check__images=2", {"explain_sanity_check"}),
        ("interpret__neighbours_k=3", {"interpret_queries"}),
        (
            "explain__resnet_surgery=paper",
            {"explain_maps", "explain_prompt_maps", "explain_sanity_check", "explain_figures", "explain_evaluation"},
        ),
        ("interpret__textspan__criterion=normalised", {"textspan_heads", "head_properties", "interpret_queries"}),
        (
            "interpret__constant_split=uniform",
            {
                "decompose_images",
                "mean_ablation",
                "textspan_heads",
                "head_properties",
                "interpret_queries",
                "decomposition_segmentation",
            },
        ),
    ],
)
def test_each_rule_sees_only_the_keys_it_reads(smoke_run, override, expected):
    jobs = planned_jobs(snakemake(smoke_run, "-n", config=SMOKE + [override]).stdout)
    assert {rule for rule, _ in jobs} - {"resolved_config", "all"} == expected


def test_report_is_self_contained_html(smoke_run):
    snakemake(smoke_run, "--report", "results/report.html", config=SMOKE)
    html = (smoke_run / "results/report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "drop_heatmaps" in html


def test_one_job_draws_the_previews_and_every_models_galleries(smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, symlinks=True)
    families = list(yaml.safe_load((ROOT / "config/perturbation/smoke.yaml").read_text())["families"])
    base = "results/figures/model={}/dataset=skimage_samples/perturbation/susceptibility_{}.png"
    galleries = [base.format(model, family) for model in ("tiny_random", "tiny_random_resnet") for family in families]
    snakemake(run, "--cores", "2", *galleries, config=SMOKE + ["models=[tiny_random_resnet]"])
    assert not (run / "logs/perturbation_figures/tiny_random_resnet").exists()  # the pictures need no plots job
    assert all((run / gallery).stat().st_mtime > (smoke_run / galleries[0]).stat().st_mtime for gallery in galleries)
    log = (run / "logs/perturbation_galleries/skimage_samples.log").read_text()
    manifest = read_manifest(run / "data/skimage_samples/manifest.parquet")
    with_masks = manifest[manifest["mask_path"].notna()]
    previewed = (with_masks if len(with_masks) else manifest)["image_id"].iloc[0]  # the first image with a mask
    tops = [
        run / f"results/perturbation/model={model}/dataset=skimage_samples/top_k.csv"
        for model in ("tiny_random", "tiny_random_resnet")
    ]
    shown = {previewed}.union(*(pd.read_csv(top, dtype={"image_id": str})["image_id"] for top in tops))
    # every image of the previews and of both models' galleries decoded and perturbed once
    assert f"previews and 2 models' galleries of {len(families)} families ({len(shown)} images)" in log


def test_folder_dataset_with_corrupt_file_records_and_skips_it(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name, value in (("a", 10), ("b", 200)):
        Image.fromarray(np.full((40, 50, 3), value, np.uint8)).save(images / f"{name}.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    workdir = tmp_path / "run"
    target = "results/summary/model=tiny_random/dataset=folder/summary.json"
    snakemake(workdir, "--cores", "2", target, config=["model=tiny_random", "dataset=folder", f"dataset__path={images}"])
    rejects = pd.read_csv(workdir / "data/folder/rejects.csv")
    assert [Path(p).name for p in rejects["path"]] == ["broken.jpg"]
    assert '"images_embedded": 2' in (workdir / target).read_text()


def test_default_config_dry_run_plans_without_weights(tmp_path):
    result = snakemake(tmp_path, "-n")
    jobs = planned_jobs(result.stdout)
    assert ("embed_images", "model=vit_b_32_openai, dataset=skimage_samples, family=clean, shard=00000") in jobs
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


def test_missing_weights_stop_the_run_before_any_output(tmp_path):
    result = snakemake(tmp_path, "--cores", "1", "--config", "model__cache_dir=" + str(tmp_path / "cache"), check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "model=tiny_random" in message and "HF_HUB_OFFLINE=1" in message and "model__checkpoint" in message
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


def test_invalid_config_fails_before_any_job(tmp_path):
    result = snakemake(tmp_path, "-n", config=["model=tiny_random", "perturbation__severities=[1,9]"], check=False)
    assert result.returncode != 0
    assert "perturbation.severities" in result.stdout + result.stderr


def test_lint_is_clean(tmp_path):
    result = snakemake(tmp_path, "--lint", config=["model=tiny_random"], check=False)
    assert result.returncode == 0, result.stdout[-3000:]
