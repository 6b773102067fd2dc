"""A job's metric series (loss curves): points keyed by step, bounded in size, downsampled for display.

A point is `{"step": int, "metrics": {name: finite float}}`; the series is kept sorted by step.
Reporting the same step again merges into that point, so a trainer that retries an update, or a
job attempt that replays steps after a restart, never duplicates a point. The stored series is
capped at `MAX_POINTS`: past it, every other point is dropped (the first and the newest kept), so
a long run keeps its whole shape at a coarser grain instead of losing its beginning.
"""
from __future__ import annotations

import bisect
import math
from typing import Any, Mapping

MAX_POINTS = 2000


def finite_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric entries of `values` (a progress report carries other things too)."""
    return {str(name): float(value) for name, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def add_point(points: list[dict[str, Any]], step: int, metrics: Mapping[str, float],
              max_points: int = MAX_POINTS) -> list[dict[str, Any]]:
    """The series with `metrics` recorded at `step` (merged into an existing point at that step)."""
    metrics = finite_metrics(metrics)
    steps = [p["step"] for p in points]
    at = bisect.bisect_left(steps, step)
    if at < len(points) and points[at]["step"] == step:
        points = [*points[:at], {"step": step, "metrics": {**points[at]["metrics"], **metrics}}, *points[at + 1:]]
    else:
        points = [*points[:at], {"step": step, "metrics": metrics}, *points[at:]]
    if len(points) > max_points:
        points = points[:-1:2] + [points[-1]]
    return points


def downsample(points: list[dict[str, Any]], max_points: int) -> list[dict[str, Any]]:
    """At most `max_points` evenly spaced points, always including the first and the last."""
    if len(points) <= max_points:
        return list(points)
    if max_points == 1:
        return [points[-1]]
    last = len(points) - 1
    picked = sorted({round(i * last / (max_points - 1)) for i in range(max_points)})
    return [points[i] for i in picked]


def columns(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Plot-ready form: `steps` and one list per metric name (None where a point lacks that metric)."""
    names = sorted({name for p in points for name in p["metrics"]})
    return {"steps": [p["step"] for p in points],
            "metrics": {name: [p["metrics"].get(name) for p in points] for name in names}}
