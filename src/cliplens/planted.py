"""A seeded synthetic world with planted concepts and exact object masks (a ground-truth benchmark).

Each image shows one or two flat-coloured shapes on a low-contrast grey texture. The first
object's attributes (colour, shape, size, position) and the background are the known concepts;
its shape is the label. In ``train`` the background is a spurious cue for the first object's
shape: with probability ``correlation`` it is the shape's preferred texture
(``backgrounds[shape_index % len(backgrounds)]``), otherwise uniform among the others. In
``test`` the background is uniform (independent of shape); in ``test_shifted`` it is never the
preferred one (the cue is reversed, as in Waterbirds).

Caption grammar (every object named, in drawing order, then the background)::

    caption = object (" and " object)? " on " background
    object  = "a " size " " colour " " shape " at the " position

e.g. "a small red circle at the top left on stripes" or
"a large blue square at the left and a small green star at the bottom right on dots".

Masks hold 0 for background and k for object k (1-based, drawing order); a later object occludes
an earlier one, so every mask pixel k shows object k's colour exactly. A second object is placed
at least half the image away from the first (centre to centre), so occlusion stays small; a first
object with no such position left (the centre of the 3x3 grid) stays alone.
Image ``i`` of a split is drawn from ``SeedSequence(seed, spawn_key=(split_index, i))``: it does
not depend on the size of any split.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from cliplens.io import atomic_output

SPLITS = ("train", "test", "test_shifted")

Grid = tuple[np.ndarray, np.ndarray]
"""Pixel-centre coordinates (x, y), each [S, S] float."""

# Shapes as predicates on coordinates normalised by the object's radius (u right, v down).
STAR_OUTER, STAR_INNER = 1.0, 0.45


def _polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over pixels."""
    inside = np.zeros(u.shape, bool)
    for (x0, y0), (x1, y1) in zip(vertices, np.roll(vertices, -1, axis=0)):
        crosses = (y0 > v) != (y1 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (u < x_at)
    return inside


def _star_vertices(points: int = 5) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, STAR_OUTER, STAR_INNER)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_STAR = _star_vertices()
_TRIANGLE = np.array([[0.0, -1.0], [0.95, 0.75], [-0.95, 0.75]])

SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u**2 + v**2 <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.8,
    "triangle": lambda u, v: _polygon(u, v, _TRIANGLE),
    "cross": lambda u, v: (np.minimum(np.abs(u), np.abs(v)) <= 0.3) & (np.maximum(np.abs(u), np.abs(v)) <= 1.0),
    "star": lambda u, v: _polygon(u, v, _STAR),
    "ring": lambda u, v: (u**2 + v**2 <= 1.0) & (u**2 + v**2 >= 0.5**2),
}
"""Supported shapes: predicate of the normalised coordinates (inside the unit disc)."""

# Backgrounds: a pattern in [-1, 1] of the pixel grid, its period (pixels) and phase.
BACKGROUNDS: dict[str, Callable[[np.ndarray, np.ndarray, int, np.ndarray], np.ndarray]] = {
    "noise": lambda x, y, p, o: np.zeros_like(x),
    "stripes": lambda x, y, p, o: np.where(((y + o[1]) // (p / 2)) % 2 == 0, 1.0, -1.0),
    "checks": lambda x, y, p, o: np.where((((x + o[0]) // (p / 2)) + ((y + o[1]) // (p / 2))) % 2 == 0, 1.0, -1.0),
    "dots": lambda x, y, p, o: np.where(
        ((x + o[0]) % (2 * p) - p) ** 2 + ((y + o[1]) % (2 * p) - p) ** 2 <= (0.4 * p) ** 2, 1.0, -0.2
    ),
    "grid": lambda x, y, p, o: np.where(((x + o[0]) % p < 1) | ((y + o[1]) % p < 1), 1.0, -0.3),
    "diagonals": lambda x, y, p, o: np.where(((x + y + o[0]) // (p / 2)) % 2 == 0, 1.0, -1.0),
}
"""Supported background textures (names are the caption words: "on stripes")."""

GREY_RANGE = (90, 165)
"""Uniform range of a background's mean grey level."""
TEXTURE_AMPLITUDE = 14.0
"""Grey levels from the texture's mean to its peaks (low contrast)."""
PIXEL_NOISE = 5.0
"""Standard deviation of independent per-pixel, per-channel noise on the background."""
COLOUR_JITTER = 15
"""Each object's RGB is its colour's RGB plus a uniform integer offset in [-jitter, jitter] per channel."""
POSITION_JITTER = 0.03
"""Object centres move uniformly by up to this fraction of the image size in x and y."""
RADIUS_JITTER = 0.1
"""Object radii vary uniformly by up to this fraction of their size's radius."""

_GRID_ROWS = {"top": 0.25, "": 0.5, "bottom": 0.75}
_GRID_COLS = {"left": 0.25, "": 0.5, "right": 0.75}
POSITIONS: dict[str, tuple[float, float]] = {
    (f"{row} {col}".strip() or "centre"): (cx, cy) for row, cy in _GRID_ROWS.items() for col, cx in _GRID_COLS.items()
}
"""Supported positions: a 3x3 grid, name -> centre (x, y) as fractions of the image size."""

DEFAULT_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 50),
    "blue": (40, 70, 230),
    "yellow": (230, 215, 40),
    "magenta": (215, 45, 215),
    "cyan": (40, 205, 215),
}
DEFAULT_SIZES = {"small": 0.15, "large": 0.27}
"""Size name -> radius as a fraction of the image size."""
DEFAULT_COUNTS = {"train": 24000, "test": 1000, "test_shifted": 1000}
DISTRACTORS = (
    "a photo of a dog",
    "a cup of coffee",
    "a city street at night",
    "a bowl of soup",
    "a sandy beach",
    "a bicycle",
    "a person smiling",
    "a snowy mountain",
)
"""Texts about nothing in the planted world, mixed into its TEXTSPAN pool."""


def _name_error(key: str, value: Any, valid: Any) -> ValueError:
    return ValueError(f"{key}: {value!r} is invalid; valid values: {valid}")


@dataclass(frozen=True)
class PlantedConfig:
    """The synthetic world: vocabularies, image size, split sizes, spurious correlation and seed."""

    colours: Mapping[str, tuple[int, int, int]] = field(default_factory=lambda: dict(DEFAULT_COLOURS))
    shapes: tuple[str, ...] = tuple(SHAPES)
    sizes: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SIZES))
    positions: tuple[str, ...] = tuple(POSITIONS)
    backgrounds: tuple[str, ...] = ("noise", "stripes", "checks", "dots")
    image_size: int = 32
    counts: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_COUNTS))
    correlation: float = 0.9
    max_objects: int = 2
    two_object_fraction: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        for key, supported in (("shapes", SHAPES), ("positions", POSITIONS), ("backgrounds", BACKGROUNDS)):
            names = getattr(self, key)
            if len(set(names)) != len(names) or len(names) < 2 or not set(names) <= set(supported):
                raise _name_error(key, names, f"at least 2 distinct names from {sorted(supported)}")
        for key in ("colours", "sizes"):
            if len(getattr(self, key)) < 2:
                raise _name_error(key, getattr(self, key), "a mapping of at least 2 names")
        if not all(len(rgb) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in rgb) for rgb in self.colours.values()):
            raise _name_error("colours", self.colours, "name -> 3 integers in [0, 255]")
        if not all(0.05 <= radius <= 0.4 for radius in self.sizes.values()):
            raise _name_error("sizes", self.sizes, "name -> radius as a fraction of the image size in [0.05, 0.4]")
        if set(self.counts) != set(SPLITS) or not all(isinstance(n, int) and n >= 0 for n in self.counts.values()):
            raise _name_error("counts", self.counts, f"an integer >= 0 for each of {list(SPLITS)}")
        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise _name_error("image_size", self.image_size, "an integer >= 16")
        for key in ("correlation", "two_object_fraction"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise _name_error(key, getattr(self, key), "a number in [0, 1]")
        if self.max_objects not in (1, 2):
            raise _name_error("max_objects", self.max_objects, [1, 2])
        if self.max_objects == 2 and not any(_far_positions(self, p) for p in self.positions):
            raise _name_error(
                "positions",
                self.positions,
                "names including two at least half the image apart (e.g. 'left', 'right') when max_objects is 2",
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> PlantedConfig:
        """A validated config from a plain mapping (e.g. parsed YAML); lists become tuples."""
        fields = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in fields:
                raise _name_error("key", key, sorted(fields))
        return cls(**{key: _freeze(value) for key, value in values.items()})

    def vocabularies(self) -> dict[str, tuple[str, ...]]:
        """The values of each attribute, keyed by its record column."""
        return {
            "colour": tuple(self.colours),
            "shape": self.shapes,
            "size": tuple(self.sizes),
            "position": self.positions,
            "background": self.backgrounds,
        }

    def preferred_background(self, shape: str) -> str:
        """The background tied to ``shape`` in train (and avoided in test_shifted)."""
        return self.backgrounds[self.shapes.index(shape) % len(self.backgrounds)]


def _freeze(value: Any) -> Any:
    """Lists (at any depth) as tuples, mappings as dicts."""
    if isinstance(value, Mapping):
        return {key: _freeze(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


def _far_positions(cfg: PlantedConfig, position: str) -> list[str]:
    """Positions whose centre is at least half the image away from ``position``'s."""
    x, y = POSITIONS[position]
    return [p for p in cfg.positions if np.hypot(POSITIONS[p][0] - x, POSITIONS[p][1] - y) >= 0.5 - 1e-9]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise _name_error("split", split, list(SPLITS))


def _preferred_probability(cfg: PlantedConfig, split: str) -> float:
    """Probability that the background is the first shape's preferred one, per split."""
    _check_split(split)
    return {"train": cfg.correlation, "test": 1.0 / len(cfg.backgrounds), "test_shifted": 0.0}[split]


def _pixel_grid(size: int) -> Grid:
    x, y = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    return x, y


def _draw_object(cfg: PlantedConfig, rng: np.random.Generator, position: str) -> dict[str, Any]:
    """Attributes and geometry of one object at ``position``."""
    colour = list(cfg.colours)[rng.integers(len(cfg.colours))]
    shape = cfg.shapes[rng.integers(len(cfg.shapes))]
    size = list(cfg.sizes)[rng.integers(len(cfg.sizes))]
    rgb = np.clip(np.array(cfg.colours[colour]) + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3), 0, 255)
    centre = (np.array(POSITIONS[position]) + rng.uniform(-POSITION_JITTER, POSITION_JITTER, 2)) * cfg.image_size
    radius = cfg.sizes[size] * cfg.image_size * (1 + rng.uniform(-RADIUS_JITTER, RADIUS_JITTER))
    return {
        "colour": colour,
        "shape": shape,
        "size": size,
        "position": position,
        "rgb": [int(c) for c in rgb],
        "centre": [round(float(c), 3) for c in centre],
        "radius": round(float(radius), 3),
    }


def _background(cfg: PlantedConfig, rng: np.random.Generator, name: str, grid: Grid) -> np.ndarray:
    """A greyish textured background, float [S, S, 3]."""
    period = max(4, cfg.image_size // 8)
    pattern = BACKGROUNDS[name](*grid, period, rng.integers(0, period, 2))
    grey = rng.uniform(*GREY_RANGE) + TEXTURE_AMPLITUDE * pattern
    return grey[..., None] + rng.normal(0.0, PIXEL_NOISE, (cfg.image_size, cfg.image_size, 3))


OBJECT_PHRASE = "a {size} {colour} {shape} at the {position}"
"""How a caption names one object."""
SINGLE_OBJECT_CAPTION = OBJECT_PHRASE + " on {background}"
"""The caption of a one-object image."""


def caption(objects: Sequence[Mapping[str, Any]], background: str) -> str:
    """The caption of objects (each with size, colour, shape and position, in drawing order) on a background."""
    return " and ".join(OBJECT_PHRASE.format(**o) for o in objects) + f" on {background}"


def image_id(split: str, index: int) -> str:
    """Stable identifier of image ``index`` of ``split``, e.g. ``train-000042``."""
    return f"{split}-{index:06d}"


def generate_image(cfg: PlantedConfig, split: str, index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Image ``index`` of ``split``: (rgb uint8 [S, S, 3], mask uint8 [S, S], record).

    The record holds image_id, split, label (first shape), label_index, caption, background,
    num_objects, the first object's colour, shape, size and position, and ``objects``: a JSON list
    of every object's attributes with its mask value, RGB, centre (x, y) and radius in pixels.
    """
    p_preferred = _preferred_probability(cfg, split)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(SPLITS.index(split), index)))
    first = _draw_object(cfg, rng, cfg.positions[rng.integers(len(cfg.positions))])
    preferred = cfg.preferred_background(first["shape"])
    others = [b for b in cfg.backgrounds if b != preferred]
    background = preferred if rng.random() < p_preferred else others[rng.integers(len(others))]
    objects = [first]
    far = _far_positions(cfg, first["position"])
    if cfg.max_objects == 2 and rng.random() < cfg.two_object_fraction and far:
        objects.append(_draw_object(cfg, rng, far[rng.integers(len(far))]))

    grid = _pixel_grid(cfg.image_size)
    pixels = _background(cfg, rng, background, grid)
    mask = np.zeros((cfg.image_size, cfg.image_size), np.uint8)
    for value, obj in enumerate(objects, start=1):
        obj["mask_value"] = value
        (cx, cy), r = obj["centre"], obj["radius"]
        inside = SHAPES[obj["shape"]]((grid[0] - cx) / r, (grid[1] - cy) / r)
        mask[inside] = value
        pixels[inside] = obj["rgb"]
    record = {
        "image_id": image_id(split, index),
        "split": split,
        "label": first["shape"],
        "label_index": cfg.shapes.index(first["shape"]),
        "caption": caption(objects, background),
        "background": background,
        "num_objects": len(objects),
        **{key: first[key] for key in ("colour", "shape", "size", "position")},
        "objects": json.dumps(objects),
    }
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mask, record


def generate_split(cfg: PlantedConfig, split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """All images of ``split``: (images uint8 [N, S, S, 3], masks uint8 [N, S, S], records)."""
    _check_split(split)
    size, count = cfg.image_size, cfg.counts[split]
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.empty((count, size, size), np.uint8)
    records = []
    for index in range(count):
        images[index], masks[index], record = generate_image(cfg, split, index)
        records.append(record)
    return images, masks, pd.DataFrame(records)


def _write_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG atomically."""
    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def write_split(cfg: PlantedConfig, split: str, out_dir: str | os.PathLike) -> pd.DataFrame:
    """Write ``images/<split>/<image_id>.png`` and ``masks/<split>/<image_id>.png`` under ``out_dir``.

    Returns the manifest: the records of :func:`generate_image` plus path, mask_path (absolute),
    width and height.
    """
    out_dir = Path(out_dir).resolve()
    image_dir, mask_dir = out_dir / "images" / split, out_dir / "masks" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    images, masks, records = generate_split(cfg, split)
    paths, mask_paths = [], []
    for image, mask, name in zip(images, masks, records["image_id"]):
        paths.append(str(image_dir / f"{name}.png"))
        mask_paths.append(str(mask_dir / f"{name}.png"))
        _write_png(image, Path(paths[-1]))
        _write_png(mask, Path(mask_paths[-1]))
    manifest = records.assign(path=paths, mask_path=mask_paths, width=cfg.image_size, height=cfg.image_size)
    front = ["image_id", "split", "path", "mask_path", "width", "height", "label"]
    return manifest[front + [c for c in manifest.columns if c not in front]]
