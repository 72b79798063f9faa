"""Seeded Pathfinder-style image generator writing the LRA release layout.

Each image shows two round markers, two dashed curved paths ("snakes") and a few short
distractor dashes. Label 1: both markers sit on the two ends of the same path. Label 0: each
marker sits on the end of a different path. Both classes draw the same number of paths and
markers, so ink statistics do not give the label away. It is Pathfinder-*style* (after Linsley
et al. 2018 / LRA), not a copy of the original snakes2 generator: good for demos, smoke tests
and benchmarks, not for paper numbers.

Layout written (what the LRA release holds for one difficulty)::

    <root>/imgs/<k>/sample_<n>.png          # grayscale PNG, size x size
    <root>/metadata/<k>.npy                 # TEXT lines, one per image:
        imgs/<k> sample_<n>.png <n> <label> 1.0 <contour> <distractor> <paddle> 1 1 1

(LRA's metadata files are text despite the ``.npy`` name; the label is field 3.) Folder ``k``
holds up to ``per_folder`` images and is drawn from ``np.random.default_rng([seed, k])``, so
the output does not depend on the number of workers.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm


@dataclass(frozen=True)
class PathfinderSpec:
    """Generator settings; lengths are in units of ``size / 32`` pixels."""

    size: int = 32
    contour_length: int = 14  # dashes per path
    step: float = 1.9  # distance between dash starts
    dash: float = 0.6  # fraction of a step that is inked
    curvature: float = 0.35  # std of the turn per step (radians)
    distractors: int = 4  # short distractor dashes per image
    marker_radius: float = 1.5
    thickness: float = 1.0


def _supersample(size: int) -> int:
    return 4 if size <= 64 else 2


def _walk(
    rng: np.random.Generator, spec: PathfinderSpec, occupied: np.ndarray
) -> np.ndarray | None:
    """Points (contour_length + 1, 2) of a smooth random path inside the frame, or None."""
    size = spec.size
    unit = size / 32.0
    step = spec.step * unit
    margin = 2.0 * spec.marker_radius * unit
    for _ in range(30):
        p = rng.uniform(margin, size - margin, 2)
        theta = rng.uniform(0, 2 * math.pi)
        pts = [p]
        ok = True
        for _ in range(spec.contour_length):
            for _ in range(12):
                t = theta + rng.normal(0.0, spec.curvature)
                q = pts[-1] + step * np.array([math.cos(t), math.sin(t)])
                inside = margin <= q[0] < size - margin and margin <= q[1] < size - margin
                if inside and not occupied[int(q[1]), int(q[0])]:
                    theta = t
                    break
                theta += rng.uniform(-math.pi / 2, math.pi / 2)
            else:
                ok = False
                break
            pts.append(q)
        if ok:
            return np.stack(pts)
    return None


def _mark(occupied: np.ndarray, pts: np.ndarray, radius: int) -> None:
    h, w = occupied.shape
    for x, y in pts:
        xi, yi = int(x), int(y)
        y0, y1 = max(0, yi - radius), min(h, yi + radius + 1)
        occupied[y0:y1, max(0, xi - radius) : min(w, xi + radius + 1)] = True


def render(rng: np.random.Generator, spec: PathfinderSpec, label: int) -> np.ndarray:
    """One (size, size) uint8 image with the given label."""
    size = spec.size
    unit = size / 32.0
    ss = _supersample(size)
    while True:
        occupied = np.zeros((size, size), dtype=bool)
        a = _walk(rng, spec, occupied)
        if a is None:
            continue
        _mark(occupied, a, max(1, round(2 * unit)))
        b = _walk(rng, spec, occupied)
        if b is None:
            continue
        _mark(occupied, b, max(1, round(1 * unit)))
        break
    img = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(img)
    width = max(1, round(spec.thickness * unit * ss))

    def dashes(pts: np.ndarray) -> None:
        for p, q in zip(pts[:-1], pts[1:], strict=True):
            e = p + spec.dash * (q - p)
            draw.line([(p[0] * ss, p[1] * ss), (e[0] * ss, e[1] * ss)], fill=255, width=width)

    dashes(a)
    dashes(b)
    for _ in range(spec.distractors):
        p = rng.uniform(0, size, 2)
        t = rng.uniform(0, 2 * math.pi)
        q = p + spec.step * unit * np.array([math.cos(t), math.sin(t)])
        dashes(np.stack([p, q]))
    r = spec.marker_radius * unit * ss
    ends = [a[0], a[-1]] if label == 1 else [a[0], b[-1]]
    for x, y in ends:
        draw.ellipse([x * ss - r, y * ss - r, x * ss + r, y * ss + r], fill=255)
    small = img.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8)


def _folder(args: tuple[Path, int, int, PathfinderSpec, int]) -> int:
    root, k, count, spec, seed = args
    rng = np.random.default_rng([seed, k])
    img_dir = root / "imgs" / str(k)
    img_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for n in range(count):
        label = int(rng.integers(2))
        pixels = render(rng, spec, label)
        Image.fromarray(pixels, mode="L").save(img_dir / f"sample_{n}.png", compress_level=1)
        lines.append(f"imgs/{k} sample_{n}.png {n} {label} 1.0 {spec.contour_length} 1 1 1 1 1\n")
    (root / "metadata").mkdir(exist_ok=True)
    (root / "metadata" / f"{k}.npy").write_text("".join(lines))
    return count


def write_pathfinder(
    root: Path,
    total: int,
    spec: PathfinderSpec,
    seed: int,
    per_folder: int = 1000,
    num_proc: int = 1,
    progress: bool = True,
) -> None:
    """Write ``total`` images + metadata under ``root`` (a ``curv_contour_length_14`` folder)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(exist_ok=True)
    jobs = []
    for k, start in enumerate(range(0, total, per_folder)):
        jobs.append((root, k, min(per_folder, total - start), spec, seed))
    bar = tqdm(
        total=total, desc=f"generate Pathfinder{spec.size}", unit="img", disable=not progress
    )
    if num_proc > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(num_proc) as pool:
            for n in pool.map(_folder, jobs):
                bar.update(n)
    else:
        for job in jobs:
            bar.update(_folder(job))
    bar.close()
