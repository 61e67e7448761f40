"""`dlforge data shapes`: coloured shapes on textured backgrounds as JPEGs, in image_folder layout.

A load generator for benchmarks and tests (any number of realistic-size images, offline, in seconds),
not a stand-in for real data. Image `i` is class `i % classes`, written to `<out>/<class>/<i>.jpg`, and
drawn from its own generator `default_rng([seed, i])`: the same seed writes the same bytes whatever the
number of workers or the order they finish in. Each shape varies in size, rotation, stretch, position and
colour, over a gradient, stripes or colour blobs with clutter and noise, so a small CNN learns it well
but not at once. torch-free (numpy and PIL).
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dlforge.errors import UserError

Polygon = np.ndarray  # (points, 2) in unit coordinates: the shape fits the circle of radius 1 at the origin


class ShapesError(UserError, ValueError):
    """A `dlforge data shapes` option out of range, or an --out that holds other files."""


def _regular(sides: int, start: float = math.pi / 2) -> Polygon:
    angles = start + np.arange(sides) * 2 * math.pi / sides
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> Polygon:
    angles = math.pi / 2 + np.arange(2 * points) * math.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _heart() -> Polygon:
    t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, y + 2.5], axis=1)


def _box(points: list[tuple[float, float]]) -> Polygon:
    return np.array(points, dtype=np.float64)


def _unit(fills: list[Polygon], holes: tuple[Polygon, ...] = ()) -> tuple[list[Polygon], list[Polygon]]:
    """Scaled so the farthest point is at radius 1: every class is placed and sized the same way."""
    scale = max(float(np.linalg.norm(p, axis=1).max()) for p in fills)
    return [p / scale for p in fills], [p / scale for p in holes]


_W, _H = 0.34, 0.21  # the cross's arm and the arrow's shaft half-widths
# Each class: filled polygons, then holes (the ring). Ellipse and diamond are stretched far more than the
# random stretch any shape gets (at most 8 % per axis), so they stay apart from circle and square.
SHAPES: dict[str, tuple[list[Polygon], list[Polygon]]] = {
    "circle": _unit([_regular(72)]),
    "square": _unit([_regular(4, math.pi / 4)]),
    "triangle": _unit([_regular(3)]),
    "star": _unit([_star()]),
    "cross": _unit([_box([(-_W, -1), (_W, -1), (_W, -_W), (1, -_W), (1, _W), (_W, _W), (_W, 1), (-_W, 1),
                          (-_W, _W), (-1, _W), (-1, -_W), (-_W, -_W)])]),
    "ring": _unit([_regular(72)], (_regular(72) * 0.55,)),
    "diamond": _unit([_regular(4) * [0.55, 1.0]]),
    "arrow": _unit([_box([(-1, -_H), (0.15, -_H), (0.15, -0.7), (1, 0), (0.15, 0.7), (0.15, _H), (-1, _H)])]),
    "heart": _unit([_heart()]),
    "ellipse": _unit([_regular(72) * [1.0, 0.5]]),
    "pentagon": _unit([_regular(5)]),
    "hexagon": _unit([_regular(6)]),
}
CLASSES = tuple(SHAPES)
SUPERSAMPLE = 4  # the shape is drawn at 4x and reduced: smooth, anti-aliased edges
BG_SPREAD, MIN_CONTRAST = 80, 100  # RGB distances: textures vary less than a shape stands out


@dataclass(frozen=True)
class ShapesSpec:
    """What every image of one data set shares."""

    size: int = 128
    classes: int = 10
    seed: int = 0
    quality: int = 90


def render(index: int, spec: ShapesSpec) -> Image.Image:
    """Image `index` (class `index % spec.classes`) as an RGB image, the same for the same seed and index."""
    rng = np.random.default_rng([spec.seed, index])
    size = spec.size
    background = _background(size, rng)
    _clutter(background, rng)
    alpha = _shape_mask(CLASSES[index % spec.classes], size, rng)
    pixels = np.asarray(background, dtype=np.float32)
    fill = _fill(size, _shape_colour(pixels, alpha, rng).astype(np.float32), rng)
    pixels = pixels * (1 - alpha[..., None]) + fill * alpha[..., None]
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * rng.uniform(2, 10)  # sensor-like noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _ramp(size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) linear ramp in [0, 1] at a random angle."""
    angle = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ramp = x * math.cos(angle) + y * math.sin(angle)
    return (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    """A gradient, stripes or smooth colour blobs around one base colour: texture a model must look past,
    with less contrast than the shape has against it (see `_shape_colour`)."""
    kind = rng.integers(3)
    base = rng.uniform(0, 255, 3)
    if kind == 2:  # blobs: a coarse random colour grid, upsampled smoothly
        cells = int(rng.integers(2, 6))
        grid = np.clip(base + rng.uniform(-BG_SPREAD, BG_SPREAD, (cells, cells, 3)), 0, 255)
        return Image.fromarray(grid.astype(np.uint8), "RGB").resize((size, size), Image.Resampling.BICUBIC)
    other = np.clip(base + rng.uniform(-BG_SPREAD, BG_SPREAD, 3), 0, 255)
    t = _ramp(size, rng)
    if kind == 1:  # stripes
        t = 0.5 + 0.5 * np.sin(2 * math.pi * rng.uniform(1.5, 6) * t + rng.uniform(0, 2 * math.pi))
    pixels = base + (other - base) * t[..., None]
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def _clutter(image: Image.Image, rng: np.random.Generator) -> None:
    """Up to three thin lines and dots drawn under the shape: edges that belong to no class."""
    draw, size = ImageDraw.Draw(image), image.width
    for _ in range(int(rng.integers(4))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
        if rng.random() < 0.5:
            draw.line((x0, y0, x1, y1), fill=colour, width=max(1, size // 64))
        else:
            r = size * rng.uniform(0.01, 0.04)
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=colour)


def _shape_mask(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Coverage in [0, 1], (size, size): the class's polygons stretched, rotated, scaled and placed."""
    big = size * SUPERSAMPLE
    radius = big * rng.uniform(0.2, 0.45)
    centre = rng.uniform(radius, big - radius, 2)
    angle = rng.uniform(0, 2 * math.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    transform = np.diag(rng.uniform(0.92, 1.08, 2)) @ rotation.T * radius
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    fills, holes = SHAPES[name]
    for polygon, value in [*((p, 255) for p in fills), *((p, 0) for p in holes)]:
        points = polygon @ transform + centre
        draw.polygon([(float(x), float(y)) for x, y in points], fill=value)
    return np.asarray(mask.reduce(SUPERSAMPLE), dtype=np.float32) / 255


def _shape_colour(background: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random colour, moved away from the background it covers when the two are too alike to see."""
    colour = rng.uniform(0, 255, 3)
    under = (background * alpha[..., None]).sum((0, 1)) / max(float(alpha.sum()), 1e-6)
    if np.linalg.norm(colour - under) < MIN_CONTRAST:
        colour = np.where(under > 127, under - MIN_CONTRAST, under + MIN_CONTRAST)
    return colour


def _fill(size: int, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The colour with light shading across the image, so a shape is not one flat value."""
    shade = 0.8 + 0.4 * _ramp(size, rng)
    return colour * shade[..., None]


def _write_chunk(out: Path, start: int, stop: int, spec: ShapesSpec) -> int:
    for index in range(start, stop):
        path = out / CLASSES[index % spec.classes] / f"{index}.jpg"
        render(index, spec).save(path, "JPEG", quality=spec.quality)
    return stop - start


def default_workers() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def generate(out: Path, n: int, spec: ShapesSpec, workers: int | None = None, overwrite: bool = False,
             on_progress: Callable[[int], None] | None = None) -> int:
    """Write `n` images under `out` with `workers` processes; `on_progress(k)` after each k written.

    Returns the count. Workers write their own files and return only counts, so memory stays flat in n.
    """
    _check(out, n, spec, workers, overwrite)
    for name in CLASSES[:spec.classes]:
        (out / name).mkdir(parents=True, exist_ok=True)
    workers = workers or default_workers()
    step = max(1, min(256, math.ceil(n / (workers * 4))))  # >= 4 chunks a worker: balance and progress
    chunks = [(start, min(start + step, n)) for start in range(0, n, step)]
    if workers == 1:
        for start, stop in chunks:
            _report(on_progress, _write_chunk(out, start, stop, spec))
        return n
    with _pool(workers) as pool:
        for done in as_completed([pool.submit(_write_chunk, out, a, b, spec) for a, b in chunks]):
            _report(on_progress, done.result())
    return n


def _report(on_progress: Callable[[int], None] | None, count: int) -> None:
    if on_progress:
        on_progress(count)


def _pool(workers: int) -> Executor:
    # fork where there is one: the workers need only numpy and PIL, and a spawned worker would import
    # dlforge.data again, torch included (about 2 s each)
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(workers, mp_context=context)


def _check(out: Path, n: int, spec: ShapesSpec, workers: int | None, overwrite: bool) -> None:
    if not 2 <= spec.classes <= len(CLASSES):
        raise ShapesError(f"--classes must be between 2 and {len(CLASSES)} ({', '.join(CLASSES)}), "
                          f"got {spec.classes}")
    for flag, value, low, high in (("--n", n, 1, None), ("--size", spec.size, 16, 4096),
                                   ("--quality", spec.quality, 1, 100), ("--workers", workers, 1, None)):
        if value is not None and (value < low or (high is not None and value > high)):
            allowed = f"between {low} and {high}" if high else f"at least {low}"
            raise ShapesError(f"{flag} must be {allowed}, got {value} (e.g. {flag} {high or low})")
    if out.exists() and not out.is_dir():
        raise ShapesError(f"--out {out} is a file; give a folder (it is created when missing)")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ShapesError(f"--out {out} is not empty; pick a new folder, or replace the shapes written there "
                              "before with --overwrite (nothing was written)")
        _remove_previous(out)


def _remove_previous(out: Path) -> None:
    """--overwrite removes only what this command writes (JPEGs in class folders): a stale class or image
    from a bigger earlier run must not stay in the data set, and nothing else is ours to delete."""
    for name in CLASSES:
        folder = out / name
        if folder.is_dir() and not folder.is_symlink():
            for image in folder.glob("*.jpg"):
                image.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()
