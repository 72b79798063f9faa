"""Path-X (LRA): Pathfinder at 128x128 pixels, sequences of 16384, 2 classes.

Same reader, splits and normalisation as `tasks.pathfinder` (this class only changes the
defaults); raw layout ``pathfinder128/curv_contour_length_14/{imgs,metadata}``. The generator
also works at 128 px, but only when asked (``source=generate``, for smoke tests and
benchmarks): ``source=auto`` without files is an error, since generated images are not the
benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.pathfinder import PathfinderTask


@dataclass
class PathXTask(PathfinderTask):
    """Path-X: `PathfinderTask` at 128 px."""

    name: str = "pathx"
    max_length: int = 16384
    resolution: int = 128
