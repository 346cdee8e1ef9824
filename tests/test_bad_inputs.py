"""Bad input, tried as a new user would: each must fail early with a message naming the problem and
the way out, or be recorded and skipped, and leave no half-written or stale output behind."""

from __future__ import annotations

import base64
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT
from PIL import Image

from cliplens.config import ConfigError, compose_config, validate_device
from cliplens.datasets import DatasetError, prepare, read_manifest, write_manifest
from cliplens.download import LOCK_FILE, ArchiveLock, ChecksumError, IncompleteDownloadError, download
from cliplens.image_files import load_rgb
from cliplens.io import atomic_output
from cliplens.perturbation import PARAMETER_DOMAINS
from cliplens.perturbation.families import FAMILIES

CONFIG = ROOT / "config"
TINY = ["model=tiny_random"]


def _photo(size: int = 48) -> np.ndarray:
    """A smooth RGB test image (uint8)."""
    y, x = np.mgrid[0:size, 0:size] / size
    return (np.stack([x, y, (x + y) / 2], axis=-1) * 255).astype(np.uint8)


def _folder_cfg(path: Path, labels_csv: Path | None = None) -> dict:
    return {"name": "folder", "kind": "folder", "path": str(path), "labels_csv": labels_csv, "mirror": None, "archives": []}


def _config_error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as error:
        compose_config(CONFIG, TINY + overrides)
    return str(error.value)


# ---------------------------------------------------------------- configuration values (item 5, 10)


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("embedding.shard_size=6.0", ["embedding.shard_size=6.0", "whole number"]),
        ("stats.n_boot=1e3", ["stats.n_boot=1000.0", "whole number"]),
        ("compute.batch_size=8.5", ["compute.batch_size", "whole number"]),
        ("perturbation.families.gaussian_blur.sigma=[-1,2,3,4,5]", ["gaussian_blur.sigma", "severity 1: -1", "[0, inf]"]),
        ("perturbation.families.jpeg_compression.quality=[0,18,15,10,7]", ["jpeg_compression.quality", "severity 1: 0"]),
        ("perturbation.families.jpeg_compression.quality=[25,18,15,10,7.5]", ["quality", "whole numbers in [1, 100]"]),
        ("perturbation.families.shot_noise.photons=[60,25,12,5,0]", ["shot_noise.photons", "severity 5: 0"]),
        ("perturbation.families.patch_grid.cells=[8,8,0,8,8]", ["patch_grid.cells", "severity 3: 0"]),
        ("perturbation.families.pixelate.factor=[0,0.5,0.4,0.3,0.25]", ["pixelate.factor", "(0, 1]"]),
        ("perturbation.families.zoom.scale=[0.9,0.75,0.6,0.45,0]", ["zoom.scale", "severity 5: 0"]),
        ("perturbation.families.rotation.degrees=[5,10]", ["5 values", "one per severity"]),
        ("interpret.queries.heads=[[0,99]]", ["interpret.queries.heads", "[0, 99]", "heads 0.."]),
        ("interpret.queries.heads=[[40,0]]", ["interpret.queries.heads", "[40, 0]", "layers 0.."]),
    ],
)
def test_values_that_would_fail_in_a_job_fail_at_validation(override, fragments):
    message = _config_error([override])
    for fragment in fragments:
        assert fragment in message, message


def test_whole_numbers_and_defaults_still_pass():
    cfg = compose_config(CONFIG, TINY + ["embedding.shard_size=6", "stats.n_boot=1000", "interpret.queries.heads=[[-1,0]]"])
    assert cfg["embedding"]["shard_size"] == 6 and cfg["stats"]["n_boot"] == 1000


def test_every_default_family_parameter_lies_in_its_domain():
    for (family, name), domain in PARAMETER_DOMAINS.items():
        assert name in FAMILIES[family].params, (family, name)
        assert all(domain.contains(value) for value in FAMILIES[family].params[name]), (family, name)


def test_a_cuda_device_without_cuda_is_named_with_the_way_out():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match=r"model.device='cuda'.*0 CUDA devices.*model.device=auto"):
        validate_device({"device": "cuda"})
    validate_device({"device": "cpu"})


def test_a_cuda_device_fails_before_any_job_when_jobs_run_here(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = snakemake(tmp_path, "--cores", "1", "results/config/resolved.yaml", config=TINY + ["model__device=cuda"])
    assert result.returncode != 0
    assert "model.device='cuda'" in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


def test_a_checkpoint_of_another_arch_fails_before_any_job(tmp_path):
    from cliplens.models import create_tiny_clip, save_checkpoint

    path = save_checkpoint(create_tiny_clip("vit", seed=0), tmp_path / "tiny.pt")
    result = snakemake(tmp_path, "--cores", "1", config=["model=checkpoint", f"model__checkpoint={path}"])
    assert result.returncode != 0
    assert "does not fit model.arch='ViT-B-32'" in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "no_images"])
def test_unusable_folder_paths_are_named(tmp_path, kind):
    path = tmp_path / "images"
    if kind == "file":
        path.write_text("not a folder")
    elif kind in ("empty", "no_images"):
        path.mkdir()
        if kind == "no_images":
            (path / "notes.txt").write_text("text")
    message = _config_error(["dataset=folder", f"dataset.path={path}"])
    assert str(path) in message
    expected = {"missing": "does not exist", "file": "is a file", "empty": "holds no image", "no_images": ".jpg"}[kind]
    assert expected in message


@pytest.mark.parametrize(
    ("csv", "fragment"),
    [
        ("name,class\na.png,cat\n", "needs columns 'file' and 'label'"),
        ("file,label\na.png,cat\na.png,dog\n", "different labels"),
        ("file,label\na.png,\n", "empty file or label"),
    ],
)
def test_bad_label_files_fail_at_validation(tmp_path, csv, fragment):
    Image.fromarray(_photo()).save(tmp_path / "a.png")
    labels = tmp_path / "labels.csv"
    labels.write_text(csv)
    message = _config_error(["dataset=folder", f"dataset.path={tmp_path}", f"dataset.labels_csv={labels}"])
    assert "dataset.labels_csv" in message and fragment in message


# ---------------------------------------------------------------- image files of every odd kind (items 2, 3, 8)


def test_sixteen_bit_and_float_images_decode_like_their_eight_bit_version(tmp_path):
    gray = _photo()[..., 0]
    Image.fromarray(gray).save(tmp_path / "8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "16.png")
    Image.fromarray(gray.astype(np.float32) / 255).save(tmp_path / "f.tiff")
    reference = np.asarray(load_rgb(tmp_path / "8.png"))
    assert Image.open(tmp_path / "16.png").mode.startswith("I")
    for name in ("16.png", "f.tiff"):
        np.testing.assert_array_equal(np.asarray(load_rgb(tmp_path / name)), reference)
    assert reference.std() > 20  # not the flat white image convert("RGB") makes of a 16-bit photo


def test_files_sharing_a_stem_get_distinct_ids(tmp_path):
    Image.fromarray(_photo()).save(tmp_path / "dup.jpg")
    Image.fromarray(_photo()[::-1].copy()).save(tmp_path / "dup.png")
    Image.fromarray(_photo()).save(tmp_path / "single.png")
    manifest, _ = prepare(_folder_cfg(tmp_path), tmp_path / "out")
    assert sorted(manifest["image_id"]) == ["dup.jpg", "dup.png", "single"]


def test_dangling_and_looping_links_are_rejected_with_a_reason(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(_photo()).save(images / "ok.png")
    (images / "dangling.png").symlink_to(images / "gone.png")
    (images / "loop.png").symlink_to(images / "loop.png")
    manifest, rejects = prepare(_folder_cfg(images), tmp_path / "out")
    assert list(manifest["image_id"]) == ["ok"]
    assert sorted(Path(p).name for p in rejects["path"]) == ["dangling.png", "loop.png"]
    assert rejects["reason"].str.len().gt(0).all()


def test_a_folder_without_one_readable_image_fails_naming_the_rejects(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(DatasetError, match=r"no readable image: 2 files rejected.*a.jpg"):
        prepare(_folder_cfg(tmp_path), tmp_path / "out")


def test_label_rows_and_images_that_do_not_match_are_logged(tmp_path, caplog):
    for name in ("a", "b", "c"):
        Image.fromarray(_photo()).save(tmp_path / f"{name}.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\na.png,cat\nb.png,dog\nb.png,dog\nmissing.png,cow\n")
    with caplog.at_level("WARNING"):
        manifest, _ = prepare(_folder_cfg(tmp_path, labels), tmp_path / "out")
    assert dict(zip(manifest["image_id"], manifest["label"])) == {"a": "cat", "b": "dog", "c": ""}
    text = caplog.text
    assert "1 repeated rows" in text
    assert "1 rows of" in text and "missing.png" in text
    assert "1 images have no row" in text and "c.png" in text


def test_manifest_paths_survive_moving_the_project(tmp_path):
    project = tmp_path / "project"
    data = project / "data" / "folder"
    (data / "images").mkdir(parents=True)
    Image.fromarray(_photo()).save(data / "images" / "a.png")
    manifest, rejects = prepare(_folder_cfg(data / "images"), data)
    write_manifest(manifest, rejects, data / "manifest.parquet", data / "rejects.csv")
    stored = pd.read_parquet(data / "manifest.parquet")
    assert stored["path"].tolist() == [os.path.join("images", "a.png")]
    moved = tmp_path / "moved"
    project.rename(moved)
    path = read_manifest(moved / "data" / "folder" / "manifest.parquet")["path"].iloc[0]
    assert Path(path).is_file() and str(moved) in path


def test_project_files_enter_jobs_relative_to_the_working_directory(monkeypatch):
    from cliplens.planning import pool_file, properties_file

    monkeypatch.chdir(ROOT)
    assert pool_file({"pool": "builtin"}) == Path("src/cliplens/data/builtin_text_pool.txt")
    assert not properties_file(None).is_absolute()


# ---------------------------------------------------------------- outputs: permissions and leftovers (items 6, 9)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_outputs_get_the_mode_open_would_give(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with atomic_output(tmp_path / "out.csv") as tmp:
            tmp.write_text("a\n")
        with open(tmp_path / "plain.csv", "w") as handle:
            handle.write("a\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == (tmp_path / "plain.csv").stat().st_mode & 0o777 == 0o666 & ~umask


def test_sigterm_during_a_write_leaves_no_temporary_and_a_rerun_cleans_older_ones(tmp_path):
    target = tmp_path / "per_image.parquet"
    stale = tmp_path / ".per_image.parquet.abc123.tmp"  # left by a process that was killed outright
    stale.write_text("partial")
    script = (
        "import sys, time\n"
        "from cliplens.io import atomic_output\n"
        "from cliplens.runtime import job_logging\n"
        f"with job_logging({str(tmp_path / 'job.log')!r}), atomic_output({str(target)!r}) as tmp:\n"
        "    tmp.write_text('x'); print('writing', flush=True); time.sleep(60)\n"
    )
    job = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert job.stdout.readline().strip() == "writing"
    assert not stale.exists()  # removed when the new write began
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=30) == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.log"]
    assert "Terminated" in (tmp_path / "job.log").read_text()


# ---------------------------------------------------------------- downloads and archives (item 7)


class _Server(http.server.ThreadingHTTPServer):
    """Serves ``files`` (path -> (body, declared length)); a declared length longer than the body
    makes a truncated response."""

    files: dict[str, tuple[bytes, int]] = {}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body, declared = self.server.files[self.path]  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.files = {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_truncated_download_is_an_error_that_leaves_nothing(tmp_path, server):
    httpd, base = server
    httpd.files["/a.zip"] = (b"x" * 1000, 100_000)
    target = tmp_path / "downloads" / "a.zip"
    with pytest.raises(IncompleteDownloadError, match="nothing was kept"):
        download(f"{base}/a.zip", target, None, ArchiveLock(tmp_path / LOCK_FILE))
    assert list((tmp_path / "downloads").iterdir()) == [] and not (tmp_path / LOCK_FILE).exists()


def test_a_download_is_trusted_on_first_use_and_verified_after(tmp_path, server, caplog):
    httpd, base = server
    httpd.files["/a.zip"] = (b"first" * 100, 500)
    lock = ArchiveLock(tmp_path / LOCK_FILE)
    target = tmp_path / "downloads" / "a.zip"
    with caplog.at_level("WARNING"):
        first = download(f"{base}/a.zip", target, None, lock)
    assert "UNVERIFIED" in caplog.text
    assert ArchiveLock(tmp_path / LOCK_FILE).entries == {f"{base}/a.zip": {"sha256": first, "size": 500}}
    target.unlink()
    httpd.files["/a.zip"] = (b"other" * 100, 500)  # the upstream changed
    with pytest.raises(ChecksumError, match="recorded in"):
        download(f"{base}/a.zip", target, None, ArchiveLock(tmp_path / LOCK_FILE))
    assert list((tmp_path / "downloads").iterdir()) == []


def test_a_pinned_hash_mismatch_leaves_nothing(tmp_path, server):
    httpd, base = server
    httpd.files["/a.zip"] = (b"payload", 7)
    with pytest.raises(ChecksumError, match="pinned"):
        download(f"{base}/a.zip", tmp_path / "a.zip", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    import io as _io

    buffer = _io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:
        for name, data in members.items():
            handle.writestr(name, data)
    return buffer.getvalue()


def test_a_dataset_that_cannot_be_downloaded_names_the_mirror(tmp_path):
    unreachable = "http://127.0.0.1:9/set.zip"  # the discard port: connection refused
    cfg = {
        "name": "imagenet_samples",
        "kind": "imagenet_samples",
        "mirror": None,
        "archives": [{"url": unreachable, "sha256": None}],
    }
    with pytest.raises(IncompleteDownloadError, match=r"dataset.mirror=.*dataset__mirror="):
        prepare(cfg, tmp_path / "data")
    assert not (tmp_path / "data" / "source").exists()


def test_an_archive_already_downloaded_is_verified_before_extraction(tmp_path, server):
    httpd, base = server
    png = tmp_path / "x.png"
    Image.fromarray(_photo()).save(png)
    archive = _zip_bytes({"set/n01440764_1.png": png.read_bytes()})
    httpd.files["/set.zip"] = (archive, len(archive))
    cfg = {
        "name": "imagenet_samples",
        "kind": "imagenet_samples",
        "mirror": None,
        "archives": [{"url": f"{base}/set.zip", "sha256": None}],
    }
    out = tmp_path / "data"
    manifest, _ = prepare(cfg, out)
    assert len(manifest) == 1 and (out / LOCK_FILE).is_file()
    # an extraction is redone from the archive in downloads/: a tampered archive is refused
    import shutil

    shutil.rmtree(out / "source")
    (out / "downloads" / "set.zip").write_bytes(_zip_bytes({"set/n01440764_1.png": b"evil"}))
    with pytest.raises(ChecksumError, match="delete it and run again"):
        prepare(cfg, out)
    assert not (out / "source").exists() and not (out / ".source.extracting").exists()


# ---------------------------------------------------------------- the workflow: dry runs and one tiny run (items 1, 4, 10)


def snakemake(workdir: Path, *args: str, config: list[str] = ()) -> subprocess.CompletedProcess:
    """Run the workflow of this repository in ``workdir`` (no check of the return code)."""
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    if config:
        command += ["--config", *config]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def planned_rules(result: subprocess.CompletedProcess) -> dict[str, list[str]]:
    """Rule -> wildcards of every job a dry run lists."""
    import re

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    planned: dict[str, list[str]] = {}
    for rule, body in re.findall(r"rule (\w+):\n((?:    .*\n)+)", result.stdout):
        planned.setdefault(rule, []).append((re.search(r"wildcards: (.*)", body) or [None, ""])[1])
    return planned


def _image_folder(root: Path, labels: dict[str, str] | None) -> list[str]:
    (root / "images").mkdir(parents=True)
    for i, name in enumerate(["a", "b", "c", "d"]):
        Image.fromarray(np.roll(_photo(64), 9 * i, axis=1)).save(root / "images" / f"{name}.png")
    overrides = ["model=tiny_random", "dataset=folder", f"dataset__path={root / 'images'}"]
    if labels is not None:
        (root / "labels.csv").write_text("file,label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
        overrides.append(f"dataset__labels_csv={root / 'labels.csv'}")
    return overrides


def test_an_unlabelled_folder_plans_only_what_runs_without_labels(tmp_path):
    config = _image_folder(tmp_path, None)
    result = snakemake(tmp_path, "-n", config=config)
    planned = planned_rules(result)
    assert "has no labels" in result.stderr + result.stdout
    assert {"embed_images", "summarise_embeddings", "perturbation_galleries", "explain_prompt_maps", "textspan_heads"} <= set(
        planned
    )
    needs_labels = {"perturbation_stats", "explain_maps", "explain_sanity_check", "mean_ablation", "decomposition_segmentation"}
    assert needs_labels.isdisjoint(planned), needs_labels & set(planned)


STATS = "results/perturbation/model=tiny_random/dataset=folder/aggregate.csv"
GRID = ["perturbation=smoke", "perturbation__families={contrast: {}, rotation: {}}", "perturbation__severities=[1,5]"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, list[str]]:
    """A finished tiny run of the perturbation statistics: four labelled images, two families."""
    root = tmp_path_factory.mktemp("finished")
    config = _image_folder(root, {"a.png": "cat", "b.png": "dog", "c.png": "cat", "d.png": "dog"}) + GRID + ["stats__n_boot=20"]
    result = snakemake(root, "--cores", "2", STATS, config=config)
    assert result.returncode == 0, result.stderr[-4000:]
    return root, config


def test_a_finished_run_has_nothing_to_do_and_compute_settings_rerun_nothing(finished_run):
    root, config = finished_run
    assert planned_rules(snakemake(root, "-n", STATS, config=config)) == {}
    assert planned_rules(snakemake(root, "-n", STATS, "results/config/resolved.yaml", config=config)) == {"resolved_config": [""]}
    snakemake(root, "--cores", "1", "results/config/resolved.yaml", config=config)
    changed = config + ["compute__batch_size=7", "compute__num_workers=0"]
    assert planned_rules(snakemake(root, "-n", STATS, "results/config/resolved.yaml", config=changed)) == {}


def test_an_interrupted_rerun_of_a_changed_family_is_not_forgotten(finished_run):
    """Item 1: Snakemake removes the shard being written, and its record, when a rerun is stopped;
    the next run must still recompute that family's embeddings and the statistics."""
    root, config = finished_run
    changed = config + ["perturbation__families__rotation__degrees=[2,4,8,16,32]"]
    shard = "results/embeddings/model=tiny_random/dataset=folder/perturbation=rotation/shard=00000.parquet"
    before = planned_rules(snakemake(root, "-n", STATS, config=changed))
    assert before.keys() == {"embed_images", "perturbation_stats"} and "family=rotation" in before["embed_images"][0]
    # what a stopped rerun leaves: the shard and its metadata record are gone
    (root / shard).unlink()
    (root / ".snakemake" / "metadata" / base64.b64encode(shard.encode()).decode()).unlink()
    after = planned_rules(snakemake(root, "-n", STATS, config=changed))
    assert after.keys() == {"embed_images", "perturbation_stats"}
    assert len(after["embed_images"]) == 1 and "family=rotation" in after["embed_images"][0]
    # the figures of that family are drawn from the new statistics, not stale ones
    figure = "results/figures/model=tiny_random/dataset=folder/perturbation/trajectories_rotation.png"
    assert "perturbation_stats" in planned_rules(snakemake(root, "-n", figure, config=changed))


def test_sigterm_to_a_running_rerun_leaves_no_temporary_and_the_next_run_completes(finished_run):
    root, config = finished_run
    changed = config + ["perturbation__families__contrast__factor=[0.5,0.4,0.3,0.2,0.1]"]
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(root), "--cores", "2", STATS]
    run = subprocess.Popen([*command, "--config", *changed], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = root / "logs/embed_images/tiny_random/folder/contrast/00000.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (log.exists() and log.stat().st_size > 0) and run.poll() is None:
        time.sleep(0.2)
    assert run.poll() is None and log.exists(), "the rerun must be stopped while its embedding job runs"
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=120) != 0  # stopped, not finished
    assert not [p for p in (root / "results").rglob("*.tmp")]
    result = snakemake(root, "--cores", "2", STATS, config=changed)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [p for p in (root / "results").rglob("*.tmp")]
    assert planned_rules(snakemake(root, "-n", STATS, config=changed)) == {}
