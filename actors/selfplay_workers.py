"""Served self-play: a job's games spread over search workers that share the node's inference server.

The job's task stays the coordinator: it runs `run_selfplay` as ever (resume, files, progress,
stop), with a `ServedGames` in place of the in-process `GameBatch`. `ServedGames` starts
`SelfplayWorker` actors on the job's node, hands each up to `parallel_games` game indices and
keeps one `advance` call outstanding per worker; each call plays one move in all of that worker's
games (its own `GameBatch`, searching through a `ServedEvaluator`) and returns the records of the
games that ended. Finished games thus reach the coordinator one move after they end, so a
worker that dies loses only its unfinished games: their indices go back to the front of the queue
and a fresh worker replays them from the start (same game ids, same game seeds).

Which path a job takes: served where the config says `served: true`, or by default where the
node has a GPU; in-process otherwise, and always for agents without a network (nothing to serve).
Workers ask Ray for no CPU of their own: the job's CPU slot is held by its coordinating task, and
the workers are that job's parallelism, bounded by `workers` (default: the node's CPUs minus one).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray

from actors.inference import InferenceClient, start_inference_server
from actors.naming import inference_name, pinned, root_cause
from orchestrator.cluster.job_types import JobContext
from orchestrator.nn.checkpoint import load_checkpoint, model_path
from orchestrator.nn.serving import ServingConfig
from orchestrator.play.games import GAMES_CONTEXT_KEY, GameCatalog
from orchestrator.play.selfplay import GameBatch, SearchTally, SelfplayConfig, _make_agent, run_selfplay
from orchestrator.play.served import ServedEvaluator

SERVED_KINDS = ("mcts", "gumbel")
# Dead workers a job replaces, per worker it runs, before it fails (a worker that keeps dying is a fault, not bad luck).
REPLACEMENTS_PER_WORKER = 3
WORKER_CALL_TIMEOUT_S = 600.0  # one move of every game of one worker; longer means the worker is wedged


@dataclass(frozen=True)
class WorkerJob:
    """What a worker needs of its job (the coordinator's JobContext does not travel)."""

    job_id: str
    node_id: str
    attempt: int
    data_dir: Path
    games: GameCatalog
    device: str = "cpu"

    def report(self, progress: dict[str, Any]) -> bool:
        return False  # workers never report: the coordinator does


@ray.remote(num_cpus=0, max_restarts=0)
class SelfplayWorker:
    def __init__(self, config: dict[str, Any], job: WorkerJob, worker: int, server_name: str, key: str,
                 module_ref: list[ray.ObjectRef]) -> None:
        self.config = SelfplayConfig.model_validate(config, context={GAMES_CONTEXT_KEY: job.games})
        self.client = InferenceClient(server_name, key, module_ref[0])
        evaluator = ServedEvaluator(self.client, job.games.load(self.config.board_type))
        # Worker 0 searches with the in-process seed, so one worker plays exactly the in-process games.
        salt = () if worker == 0 else ("worker", worker)
        agent = _make_agent(self.config.agent_spec(), self.config, job, evaluator=evaluator, seed_salt=salt)
        self.games = GameBatch(self.config, job, agent)

    def advance(self, indices: list[int]) -> dict[str, Any]:
        """Start these games, play one move in every game held; what ended and the counters."""
        for index in indices:
            self.games.start(index)
        finished = self.games.step() if self.games.active else []
        return {
            "finished": finished, "in_flight": [g.index for g in self.games.active], "positions": self.games.positions,
            "search": asdict(self.games.search), "eval": self.games.agent.evaluator.stats(),
            "server_retries": self.client.retries, "server_reloads": self.client.reloads,
        }


def node_cpus(ray_node_id: str) -> float:
    return next((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["NodeID"] == ray_node_id and n["Alive"]), 1.0)


def node_has_gpu(ray_node_id: str) -> bool:
    return bool(ray.get_gpu_ids()) or any(
        n["Resources"].get("GPU", 0.0) > 0 for n in ray.nodes() if n["NodeID"] == ray_node_id and n["Alive"])


def wants_served(config: SelfplayConfig, ray_node_id: str) -> bool:
    spec = config.agent_spec()
    if spec.model_id is None or spec.kind not in SERVED_KINDS:
        return False
    return config.served if config.served is not None else node_has_gpu(ray_node_id)


class ServedGames:
    """A `GameStepper` whose games are played by search workers on this node (see the module docstring)."""

    def __init__(self, config: SelfplayConfig, ctx: JobContext, module: Any, *, workers: int | None = None,
                 server_name: str | None = None) -> None:
        self.config = config
        self.ray_node_id = ray.get_runtime_context().get_node_id()
        self.count = workers or config.workers or max(1, int(node_cpus(self.ray_node_id)) - 1)
        self.job = WorkerJob(ctx.job_id, ctx.node_id, ctx.attempt, Path(ctx.data_dir), ctx.games)
        self.server_name = server_name or inference_name(ctx.node_id)
        if server_name is None:
            start_inference_server(ctx.node_id, self.ray_node_id,
                                   ServingConfig(max_batch=config.served_max_batch, max_wait_s=config.served_max_wait_s))
        self.key = config.agent_spec().model_id
        # On the CPU wherever it was loaded: the server moves it to its device.
        self.module_ref = ray.put(getattr(module, "model", module).to("cpu"))
        InferenceClient(self.server_name, self.key, self.module_ref).ensure_loaded()
        self.positions = 0
        self.replacements = 0
        self._next_index = 0
        self._workers: dict[int, Any] = {}
        self._assigned: dict[int, list[int]] = {}
        self._calls: dict[ray.ObjectRef, int] = {}
        self._reports: dict[int, dict[str, Any]] = {}  # each worker's last counters, dead ones' kept
        self._started = time.monotonic()
        for _ in range(self.count):
            self._start_worker()

    def _start_worker(self) -> None:
        worker = self._next_index
        self._next_index += 1
        self._workers[worker] = SelfplayWorker.options(
            scheduling_strategy=pinned(self.ray_node_id), name=None,
        ).remote(self.config.model_dump(), self.job, worker, self.server_name, self.key, [self.module_ref])
        self._assigned[worker] = []

    def in_flight(self) -> int:
        return sum(len(indices) for indices in self._assigned.values())

    def fill(self, remaining: deque[int]) -> None:
        busy = set(self._calls.values())
        for worker, handle in self._workers.items():
            if worker in busy:
                continue
            held = self._assigned[worker]
            new = [remaining.popleft() for _ in range(min(len(remaining), self.config.parallel_games - len(held)))]
            if held or new:
                held.extend(new)
                self._calls[handle.advance.remote(new)] = worker

    def step(self, remaining: deque[int]) -> list[dict[str, Any]]:
        if not self._calls:
            return []
        ready, _ = ray.wait(list(self._calls), num_returns=1, timeout=WORKER_CALL_TIMEOUT_S)
        if not ready:
            raise TimeoutError(f"no self-play worker answered in {WORKER_CALL_TIMEOUT_S:.0f}s")
        finished: list[dict[str, Any]] = []
        for ref in ready:
            worker = self._calls.pop(ref)
            try:
                report = ray.get(ref)
            except ray.exceptions.RayActorError:
                self._replace(worker, remaining)
                continue
            except ray.exceptions.RayTaskError as exc:
                raise root_cause(exc) from None
            finished.extend(report["finished"])
            self._assigned[worker] = report["in_flight"]
            self._reports[worker] = report
            self.positions = sum(r["positions"] for r in self._reports.values())
        return finished

    def _replace(self, worker: int, remaining: deque[int]) -> None:
        """A dead worker's unfinished games go back to the front of the queue; a fresh worker takes its place."""
        lost = sorted(self._assigned.pop(worker))
        remaining.extendleft(reversed(lost))
        del self._workers[worker]
        self.replacements += 1
        if self.replacements > REPLACEMENTS_PER_WORKER * self.count:
            raise RuntimeError(f"{self.replacements} self-play workers died; giving up")
        self._start_worker()

    def progress(self) -> dict[str, Any]:
        tally = SearchTally()
        calls = leaves = network_s = 0.0
        retries = reloads = 0
        for report in self._reports.values():
            for name, value in report["search"].items():
                # Workers search side by side: the job's search time is the longest of theirs.
                setattr(tally, name, max(tally.seconds, value) if name == "seconds" else getattr(tally, name) + value)
            calls += report["eval"]["network_calls"]
            leaves += report["eval"]["leaves"]
            network_s += report["eval"].get("network_s", 0.0)
            retries += report["server_retries"]
            reloads += report["server_reloads"]
        elapsed = max(time.monotonic() - self._started, 1e-9)
        return {
            "in_flight": self.in_flight(), **tally.summary(),
            "eval_network_calls": calls, "eval_leaves": leaves, "eval_leaves_per_call": leaves / calls if calls else 0.0,
            "eval_evals_per_s": leaves / elapsed, "eval_network_s": network_s,
            "served": True, "workers": self.count, "worker_replacements": self.replacements,
            "server_retries": retries, "server_reloads": reloads,
        }

    def close(self) -> None:
        for handle in self._workers.values():
            ray.kill(handle, no_restart=True)
        self._workers.clear()
        self._calls.clear()
        self._assigned.clear()  # abandoned, as the in-process loop abandons its games at a stop


def load_job_model(config: SelfplayConfig, ctx: JobContext) -> Any:
    model_id = config.agent_spec().model_id
    loader = getattr(ctx, "load_model", None)
    return loader(model_id) if loader else load_checkpoint(model_path(ctx.data_dir, model_id), device="cpu")


def run_selfplay_job(config: SelfplayConfig, ctx: JobContext) -> dict[str, Any]:
    """The self-play job type's run: served where `wants_served`, else today's in-process loop."""
    if not wants_served(config, ray.get_runtime_context().get_node_id()):
        return run_selfplay(config, ctx)
    module = load_job_model(config, ctx)
    return run_selfplay(config, ctx, lambda c, x: ServedGames(c, x, module))
