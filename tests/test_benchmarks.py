"""The end-to-end benchmark's parsing: job times from a Snakemake run log, per-rule seconds from the
benchmark files and the jobs' logs, and the figure cost of timed pairs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cliplens.models import encode_pixels
from cliplens.runtime import resources_used

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_pipeline  # noqa: E402

RUN_LOG = """\
Building DAG of jobs...
Using shell: /usr/bin/bash
Provided cores: 2
Job stats:
job                 count
----------------  -------
embed_images            1
prepare_dataset         1
total                   2

Select jobs to execute...

[Wed Dec  2 13:00:01 2026]
localrule prepare_dataset:
    output: data/folder/manifest.parquet
    log: logs/prepare_dataset/folder.log
    jobid: 2
    reason: Missing output files: data/folder/manifest.parquet
    resources: tmpdir=/tmp

[Wed Dec  2 13:00:07 2026]
Finished jobid: 2 (Rule: prepare_dataset)
1 of 2 steps (50%) done
Select jobs to execute...

[Wed Dec  2 13:00:08 2026]
rule embed_images:
    input: data/folder/manifest.parquet
    jobid: 1
    wildcards: model=tiny_random, family=contrast
    resources: tmpdir=/tmp, gpu=0

[Wed Dec  2 13:00:30 2026]
Finished jobid: 1 (Rule: embed_images)
2 of 2 steps (100%) done
[Wed Dec  2 13:00:31 2026]
Complete log: .snakemake/log/2026-12-02T130001.snakemake.log
"""


def test_job_times_pair_each_jobs_start_with_its_finish_line(tmp_path: Path) -> None:
    log = tmp_path / "run.snakemake.log"
    log.write_text(RUN_LOG)
    jobs, span = bench_pipeline.job_times(log)
    assert jobs == {2: ("prepare_dataset", 6.0), 1: ("embed_images", 22.0)}
    assert span == 30.0


def test_per_rule_seconds_from_benchmark_files_and_the_jobs_last_log_line(tmp_path: Path) -> None:
    for rule, job, seconds in (("embed_images", "a", 8.5), ("embed_images", "b", 9.25), ("train", "x", 60.0)):
        tsv = tmp_path / "logs" / "benchmarks" / rule / f"{job}.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        tsv.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:08\t512.0\n")
    found = bench_pipeline.benchmark_seconds(tmp_path)
    assert sorted(found["embed_images"]) == [8.5, 9.25] and found["train"] == [60.0]

    (tmp_path / "logs" / "embed_images").mkdir(parents=True)
    (tmp_path / "logs" / "embed_images" / "a.log").write_text(f"started\n{resources_used()}\n")
    (tmp_path / "logs" / "report.log").write_text("resources used: cpu 3.25 s, peak rss 100 MB\n")  # an older log
    (tmp_path / "logs" / "plots").mkdir()
    (tmp_path / "logs" / "plots" / "m.log").write_text(
        "resources used: cpu 9.50 s, peak rss 180 MB, 12 figures saved in 6.25 cpu s\n"
    )
    (tmp_path / "logs" / "failed.log").write_text("Traceback ...\n")  # a failed job logs no resources
    cpu = bench_pipeline.logged_cpu_seconds(tmp_path)
    assert set(cpu) == {"embed_images", "report", "plots"}
    assert cpu["report"] == [(3.25, 0.0)] and cpu["plots"] == [(9.5, 6.25)]
    assert cpu["embed_images"][0][0] > 0


def test_figure_cost_is_the_mean_share_with_its_standard_error() -> None:
    text = bench_pipeline.figure_cost([(100.0, 90.0), (100.0, 80.0), (50.0, 45.0)])
    lines = text.splitlines()
    assert lines[0] == (
        "pair 1: wall 100.0 s, without the figure jobs 90.0 s: the figures cost 10.0 s = 10% of the run's wall time"
    )
    # shares 0.1, 0.2, 0.1: mean 13.3%, standard error sqrt(((1/30)^2 * 2 + (2/30)^2) / 2 / 3) = 3.3%
    assert lines[-1] == "over 3 pairs: the figures cost 11.7 s, 13.3% +- 3.3% (standard error) of the run's wall time"
    assert len(bench_pipeline.figure_cost([(10.0, 9.0)]).splitlines()) == 1


@pytest.mark.parametrize("figure_rule", sorted(bench_pipeline.FIGURE_RULES))
def test_figure_rules_are_rules_of_the_workflow(figure_rule: str) -> None:
    rules = (Path(__file__).resolve().parents[1] / "workflow" / "rules").glob("*.smk")
    assert any(f"rule {figure_rule}:" in path.read_text() for path in rules)


def test_a_copy_without_git_leaves_out_the_outputs_at_the_root_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine that received the tree without .git, the fresh copy skips results, logs, data,
    environments and wheels at the root, and keeps folders of those names inside the sources."""
    tree = tmp_path / "tree"
    for name in ("Snakefile", "results/x.parquet", "data/d/manifest.parquet", ".whl/a.whl", "src/pkg/data/pool.txt"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(name)
    monkeypatch.setattr(bench_pipeline, "ROOT", tree)
    copy = bench_pipeline.fresh_copy(tmp_path / "copy")
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == [
        "Snakefile",
        "src/pkg/data/pool.txt",
    ]


def test_gpu_precision_step_reports_each_images_cosine_with_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reduced-precision side (here fp32 plus a known rotation, as CUDA is not needed) is
    compared image by image with the fp32 CPU side; without CUDA the verdict says it was not tested."""
    import bench_gpu
    import torch

    def tilt(embedding: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(embedding + 0.05 * torch.roll(embedding, 1), dim=0)

    encoded = []

    def encode(loaded, pixels):
        embeddings = encode_pixels(loaded, pixels)
        encoded.append(embeddings)
        if len(encoded) == 1:  # the fp32 reference
            return embeddings
        tilted = embeddings.clone()
        tilted[0] = tilt(embeddings[0])
        return tilted

    monkeypatch.setattr(bench_gpu, "encode_pixels", encode)
    rows = bench_gpu.precision_rows(["tiny_random"], 4)
    assert [row["requested"] for row in rows] == ["fp16", "bf16"] and len(encoded) == 3
    reference = encoded[0]
    expected = float(reference[0] @ tilt(reference[0]))
    for row in rows:
        assert row["min_cosine"] == pytest.approx(expected, abs=1e-6) and expected < 0.9995
        assert row["mean_cosine"] == pytest.approx((expected + 3) / 4, abs=1e-6)
        if not torch.cuda.is_available():
            assert row["precision"] == "fp32" and row["target_met"] == "not tested (fp32)"
