"""The registry of job types. Later capabilities add theirs here (self-play, training, ...).

A job type is pure Python: it validates its config with a pydantic model and runs with a
`JobContext`, which is how it reports progress and learns that it should stop. The Ray task
that hosts it lives in `actors/tasks.py`; nothing here knows about Ray.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from pydantic import BaseModel

from orchestrator.play.games import GameCatalog

# job_type -> "module:attribute" of its JobType; imported on first use so a node pays only for what it runs.
_REGISTRY: dict[str, str] = {
    "benchmark": "orchestrator.cluster.benchmark_job:BENCHMARK",
    "selfplay": "orchestrator.play.selfplay:SELFPLAY",
    "training": "orchestrator.learn.jobs:TRAINING",
    "nnue_training": "orchestrator.learn.jobs:NNUE_TRAINING",
}


class JobContext(Protocol):
    job_id: str
    node_id: str
    attempt: int
    data_dir: Path
    device: str  # "cpu" or "cuda"
    games: GameCatalog  # this deployment's board types

    def report(self, progress: dict[str, Any]) -> bool:
        """Record progress; returns True when the job has been asked to stop gracefully."""


@dataclass(frozen=True)
class JobType:
    name: str
    config_model: type[BaseModel]
    run: Callable[[BaseModel, JobContext], dict[str, Any]]
    wants_gpu: bool = False
    num_cpus: float = 1.0


def known_job_types() -> list[str]:
    return sorted(_REGISTRY)


def get_job_type(name: str) -> JobType:
    """Raises KeyError for an unknown name."""
    module_name, attribute = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)
