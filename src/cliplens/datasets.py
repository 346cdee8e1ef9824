"""Datasets: preparing a normalised manifest (Parquet) and a rejects file for every dataset kind.

Manifest columns: image_id, path, label, label_index, width, height, mask_path (null without masks).
Paths below the manifest's folder are stored relative to it (the project can move), others absolute;
:func:`read_manifest` returns them absolute. Unreadable images (corrupt, truncated, dangling or
looping links) go to the rejects table (path, reason) and are skipped; a dataset without one
readable image is an error.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from cliplens.download import (
    LOCK_FILE,
    ArchiveLock,
    IncompleteDownloadError,
    download,
    safe_extract_zip,
    verify_archive,
)
from cliplens.io import atomic_output

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
MANIFEST_COLUMNS = ["image_id", "path", "label", "label_index", "width", "height", "mask_path"]
REJECT_COLUMNS = ["path", "reason"]
MANIFEST_METADATA_KEY = b"cliplens_manifest"

# scikit-image's bundled photos and the labels cliplens gives them (loader name, label)
SKIMAGE_SAMPLES: tuple[tuple[str, str], ...] = (
    ("astronaut", "astronaut"),
    ("chelsea", "cat"),
    ("coffee", "cup of coffee"),
    ("rocket", "rocket"),
    ("stereo_motorcycle", "motorcycle"),
    ("hubble_deep_field", "galaxy"),
    ("retina", "retina"),
    ("camera", "photographer"),
    ("coins", "coins"),
    ("moon", "moon"),
    ("brick", "brick wall"),
    ("clock", "clock"),
)


class DatasetError(ValueError):
    """A dataset cannot be prepared; the message names the files and the way out."""


def count_image_files(root: Path) -> int:
    """Number of image files below ``root`` (by suffix, links included): a directory walk, cheap for 50k files."""
    return sum(Path(name).suffix.lower() in IMAGE_SUFFIXES for _, _, names in os.walk(root) for name in names)


def list_image_files(root: Path) -> list[Path]:
    """Image files below ``root`` (by suffix), sorted for a stable order; links are listed even when
    dangling or looping, so that they reach the rejects table instead of vanishing."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_symlink() or p.is_file()))


def read_labels_csv(path: str | os.PathLike) -> dict[str, str]:
    """The labels of a folder dataset: a CSV with columns ``file`` (relative to the folder) and ``label``.

    Raises DatasetError for missing columns, empty cells and a file listed twice with different labels.
    """
    try:
        table = pd.read_csv(Path(path).expanduser(), dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable CSV ({error})") from error
    if not {"file", "label"} <= set(table.columns):
        raise DatasetError(f"{path} needs columns 'file' and 'label'; has {list(table.columns)}")
    table["file"] = [os.path.normpath(name.strip()) for name in table["file"]]
    table["label"] = table["label"].str.strip()
    empty = table[(table["file"] == ".") | (table["label"] == "")]
    if len(empty):
        raise DatasetError(f"{path}: {len(empty)} rows with an empty file or label, first at line {empty.index[0] + 2}")
    labels_per_file = table.groupby("file")["label"].unique()
    conflicts = labels_per_file[labels_per_file.map(len) > 1]
    if len(conflicts):
        file, labels = next(iter(conflicts.items()))
        raise DatasetError(
            f"{path}: {len(conflicts)} files listed with different labels, e.g. {file!r}: {sorted(labels)}; keep one row per file"
        )
    repeated = int(table["file"].duplicated().sum())
    if repeated:
        log.warning("%s: %d repeated rows (same file and label) ignored", path, repeated)
    return dict(zip(table["file"], table["label"]))


def inspect_image(path: Path) -> tuple[int, int]:
    """Fully decode an image (catching truncation) and return (width, height)."""
    with Image.open(path) as image:
        image.load()
        return image.size


def build_manifest(
    paths: list[Path],
    label_indices: list[int],
    label_names: list[str],
    mask_paths: list[str | None] | None = None,
    root: Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every image and return (manifest, rejects). Label index -1 marks an unlabeled image.

    Labels go by index, not name: label sets can repeat a name (ImageNet has two 'sunglasses').
    """
    rows: list[dict[str, Any]] = []
    rejects = []
    for i, path in enumerate(paths):
        try:
            width, height = inspect_image(path)
        except Exception as error:  # PIL raises many types for bad files
            rejects.append({"path": str(path), "reason": f"{type(error).__name__}: {error}"})
            log.warning("skipping unreadable image %s: %s", path, error)
            continue
        image_id = str(path.relative_to(root).with_suffix("")) if root else path.stem
        rows.append(
            {
                "image_id": image_id,
                "path": str(path.absolute()),
                "label": label_names[label_indices[i]] if label_indices[i] >= 0 else "",
                "label_index": label_indices[i],
                "width": width,
                "height": height,
                "mask_path": mask_paths[i] if mask_paths else None,
            }
        )
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).astype({"label_index": "int64", "width": "int64", "height": "int64"})
    manifest["image_id"] = unique_image_ids(manifest["image_id"].tolist(), manifest["path"].tolist(), root)
    manifest.attrs["label_names"] = label_names
    return manifest, pd.DataFrame(rejects, columns=REJECT_COLUMNS)


def unique_image_ids(ids: list[str], paths: list[str], root: Path | None) -> list[str]:
    """Image ids made unique: files that share a stem (``dup.jpg``, ``dup.png``) keep their suffix."""
    counts = pd.Series(ids).value_counts()
    clashing = set(counts[counts > 1].index)
    if not clashing:
        return ids
    log.warning("%d image ids shared by files of the same stem (e.g. %r): those keep their suffix", len(clashing), min(clashing))
    unique = [
        (str(Path(path).relative_to(root.absolute())) if root else Path(path).name) if image_id in clashing else image_id
        for image_id, path in zip(ids, paths)
    ]
    repeated = sorted({i for i in unique if unique.count(i) > 1})
    if repeated:
        raise DatasetError(f"image ids {repeated[:5]} are not unique even with their suffix; rename those files")
    return unique


def _prepare_skimage(cfg: Mapping[str, Any], out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    import skimage.data

    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for loader, label in SKIMAGE_SAMPLES:
        pixels = getattr(skimage.data, loader)()
        pixels = pixels[0] if isinstance(pixels, tuple) else pixels
        pixels = np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels[..., :3]
        path = image_dir / f"{loader}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        paths.append(path)
        labels.append(label)
    names = list(dict.fromkeys(labels))
    return build_manifest(paths, [names.index(label) for label in labels], names)


def _source_root(cfg: Mapping[str, Any], out_dir: Path, marker: str) -> Path:
    """The dataset's files: the mirror read in place, or the verified archives extracted under out_dir."""
    if cfg.get("mirror"):
        return Path(cfg["mirror"]).expanduser().resolve()
    extracted = out_dir / "source"
    if not extracted.is_dir():  # extracted in a staging folder, renamed when every archive is in
        lock = ArchiveLock(out_dir / LOCK_FILE)
        staging = out_dir / ".source.extracting"
        shutil.rmtree(staging, ignore_errors=True)
        for archive in cfg["archives"]:
            local = out_dir / "downloads" / Path(archive["url"]).name
            if local.exists():
                verify_archive(local, archive["url"], archive["sha256"], lock)
            else:
                try:
                    download(archive["url"], local, archive["sha256"], lock)
                except IncompleteDownloadError as error:
                    raise IncompleteDownloadError(
                        f"{error}. Without internet, read a local copy of dataset {cfg['name']!r} in place: "
                        "dataset.mirror=/path/to/copy (snakemake --config dataset__mirror=/path/to/copy)"
                    ) from error
            safe_extract_zip(local, staging)
        os.replace(staging, extracted)
    candidates = sorted({p.parent for p in extracted.rglob(marker)})
    if not candidates:
        raise FileNotFoundError(f"no {marker} found in the extracted archives under {extracted}")
    return candidates[0]


def _prepare_imagenet_samples(cfg: Mapping[str, Any], out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    import open_clip

    root = _source_root(cfg, out_dir, "n01440764_*")
    names = list(open_clip.IMAGENET_CLASSNAMES)
    paths = list_image_files(root)
    # ImageNet-1k class index = position of the WordNet id among the 1000 sorted ids
    wnids = sorted({p.name.split("_")[0] for p in paths})
    index = {wnid: i for i, wnid in enumerate(wnids)} if len(wnids) == len(names) else {}
    labels = [index.get(p.name.split("_")[0], -1) for p in paths]
    return build_manifest(paths, labels, names, root=root)


def coco_class_names(root: Path) -> dict[int, str]:
    """COCO panoptic category id -> name, from semantic_segmentation/config.yaml (0 = unlabeled)."""
    config = yaml.safe_load((root / "semantic_segmentation" / "config.yaml").read_text())
    return {int(k): v for k, v in config["classes"].items()}


def _prepare_coco128(cfg: Mapping[str, Any], out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    root = _source_root(cfg, out_dir, "semantic_segmentation").parent
    root = root if (root / "images").is_dir() else root / "coco128"
    classes = coco_class_names(root)
    class_ids = [k for k in sorted(classes) if k != 0]
    names = [classes[k] for k in class_ids]
    index_of_id = {k: i for i, k in enumerate(class_ids)}
    paths, labels, masks = [], [], []
    for path in list_image_files(root / "images"):
        split = path.parent.name
        mask = root / "semantic_segmentation" / "masks" / split / f"{path.stem}.png"
        label = -1
        if mask.is_file():
            ids, counts = np.unique(np.asarray(Image.open(mask)), return_counts=True)
            keep = ids != 0
            if keep.any():  # the class covering most labelled pixels is the image's label
                label = index_of_id.get(int(ids[keep][np.argmax(counts[keep])]), -1)
        paths.append(path)
        labels.append(label)
        masks.append(str(mask.resolve()) if mask.is_file() else None)
    manifest, rejects = build_manifest(paths, labels, names, mask_paths=masks, root=root / "images")
    manifest.attrs["mask_ids"] = class_ids
    return manifest, rejects


def _prepare_folder(cfg: Mapping[str, Any], out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    root = Path(cfg["path"]).expanduser().resolve()
    paths = list_image_files(root)
    labels, names = [""] * len(paths), []
    if cfg.get("labels_csv"):
        by_file = read_labels_csv(cfg["labels_csv"])
        files = [str(p.relative_to(root)) for p in paths]
        labels = [by_file.get(file, "") for file in files]
        names = sorted({label for label in labels if label})
        csv = cfg["labels_csv"]
        _log_unmatched(f"rows of {csv} name no image file of the folder", sorted(set(by_file) - set(files)))
        _log_unmatched(f"images have no row in {csv} and stay unlabelled", [f for f in files if f not in by_file])
    index = {name: i for i, name in enumerate(names)}
    return build_manifest(paths, [index.get(label, -1) for label in labels], names, root=root)


def _log_unmatched(what: str, names: list[str]) -> None:
    if names:
        log.warning("%d %s, e.g. %s", len(names), what, names[:3])


def _prepare_planted(cfg: Mapping[str, Any], out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One split of the planted-concept world: images, object masks and every attribute (generated)."""
    from cliplens.planted import PlantedConfig, write_split

    world = PlantedConfig.from_mapping(cfg["world"])
    manifest = write_split(world, cfg["split"], out_dir)
    manifest.attrs["label_names"] = list(world.shapes)
    manifest.attrs["vocabularies"] = {attribute: list(values) for attribute, values in world.vocabularies().items()}
    return manifest, pd.DataFrame(columns=REJECT_COLUMNS)


PREPARERS: dict[str, Callable[[Mapping[str, Any], Path], tuple[pd.DataFrame, pd.DataFrame]]] = {
    "skimage": _prepare_skimage,
    "imagenet_samples": _prepare_imagenet_samples,
    "coco128": _prepare_coco128,
    "folder": _prepare_folder,
    "planted": _prepare_planted,
}


def prepare(cfg: Mapping[str, Any], out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prepare a dataset config's manifest and rejects (fetching or extracting into out_dir when needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest, rejects = PREPARERS[cfg["kind"]](cfg, out_dir)
    if manifest.empty:
        examples = "; ".join(f"{row.path}: {row.reason}" for row in rejects.head(3).itertuples())
        raise DatasetError(
            f"dataset {cfg.get('name', cfg['kind'])!r} has no readable image: {len(rejects)} files rejected"
            + (f" (e.g. {examples})" if examples else "")
            + f"; image files count by suffix: {sorted(IMAGE_SUFFIXES)}"
        )
    return manifest, rejects


def write_manifest(manifest: pd.DataFrame, rejects: pd.DataFrame, manifest_path: Path, rejects_path: Path) -> None:
    """Write the manifest (Parquet; its attrs - label names, mask ids - as JSON metadata) and rejects (CSV)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = manifest_path.parent.absolute()
    stored = manifest.assign(**{column: _relative_paths(manifest[column], base) for column in ("path", "mask_path")})
    table = pa.Table.from_pandas(stored, preserve_index=False)
    table = table.replace_schema_metadata({MANIFEST_METADATA_KEY: json.dumps(manifest.attrs).encode()})
    with atomic_output(manifest_path) as tmp:
        pq.write_table(table, tmp)
    with atomic_output(rejects_path) as tmp:
        rejects.to_csv(tmp, index=False)


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest; ``attrs['label_names']`` holds the label set in label-index order
    (and ``attrs['mask_ids']`` the mask class id of each label, for datasets with masks)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    manifest = table.to_pandas()
    base = Path(path).parent.absolute()
    for column in ("path", "mask_path"):
        manifest[column] = [None if pd.isna(p) else p if os.path.isabs(p) else str(base / p) for p in manifest[column]]
    manifest.attrs.update(json.loads((table.schema.metadata or {}).get(MANIFEST_METADATA_KEY, b"{}")))
    return manifest


def _relative_paths(paths: pd.Series, base: Path) -> list[str | None]:
    """Paths below ``base`` relative to it, others absolute (None stays None)."""
    stored: list[str | None] = []
    for path in paths:
        if pd.isna(path):
            stored.append(None)
            continue
        absolute = Path(os.path.abspath(path))
        stored.append(str(absolute.relative_to(base)) if absolute.is_relative_to(base) else str(absolute))
    return stored


def shard_rows(manifest: pd.DataFrame, shard: int, shard_size: int) -> pd.DataFrame:
    """Rows of one shard (may be empty when rejects made the dataset smaller than declared)."""
    return manifest.iloc[shard * shard_size : (shard + 1) * shard_size]
