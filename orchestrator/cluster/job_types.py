"""What a job type is. The catalogue of job types is wired together above this package, so nothing
here names a workload.

A job type is pure Python: it validates its config with a pydantic model (given the node's game
catalogue as validation context) and runs with a `JobContext`, which is how it reports progress
and learns that it should stop. Whatever hosts it (a Ray task in production) lives above this
package; nothing here knows about Ray.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from pydantic import BaseModel

from orchestrator.play.games import GameCatalog


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


class JobTypeCatalog(Protocol):
    def names(self) -> list[str]:
        """The known job type names, sorted."""

    def get(self, name: str) -> JobType:
        """The job type; KeyError for an unknown name."""
