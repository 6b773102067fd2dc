"""The catalogue of job types: where the workloads of nn/, play/ and learn/ are wired to the
supervisor, so that no domain package names another one above it.

Each job type's module is imported the first time the type is used, so a node pays only for what
it runs (self-play and training pull in torch and OpenSpiel search).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

from orchestrator.cluster.job_types import JobType


def _benchmark() -> JobType:
    from orchestrator.nn.benchmark import BENCHMARK
    return BENCHMARK


def _selfplay() -> JobType:
    from actors.selfplay_workers import run_selfplay_job
    from orchestrator.play.selfplay import SELFPLAY
    # Served inference (search workers against the node's inference server) where the job or node calls for it.
    return replace(SELFPLAY, run=run_selfplay_job)


def _training() -> JobType:
    from orchestrator.learn.jobs import TRAINING
    return TRAINING


def _nnue_training() -> JobType:
    from orchestrator.learn.jobs import NNUE_TRAINING
    return NNUE_TRAINING


@dataclass(frozen=True)
class JobCatalog:
    """job_type -> a loader of its JobType (a `JobTypeCatalog` for the supervisor core)."""

    loaders: Mapping[str, Callable[[], JobType]]

    def names(self) -> list[str]:
        return sorted(self.loaders)

    def get(self, name: str) -> JobType:
        kind = self.loaders[name]()
        if kind.name != name:
            raise KeyError(f"job type {name!r} is wired to {kind.name!r}")
        return kind


JOB_TYPES = JobCatalog({
    "benchmark": _benchmark,
    "selfplay": _selfplay,
    "training": _training,
    "nnue_training": _nnue_training,
})
