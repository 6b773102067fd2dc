"""Self-play over search workers: served ones sharing the node's inference servers, and in-process ones on other nodes.

The job's task stays the coordinator: it runs `run_selfplay` as ever (resume, files, progress,
stop), with a `ServedGames` in place of the in-process `GameBatch`. `ServedGames` starts
`SelfplayWorker` actors on the job's node, hands each up to `parallel_games` game indices and
keeps one `advance` call outstanding per worker; each call plays one move in all of that worker's
games (its own `GameBatch`, searching through a `ServedEvaluator`) and returns the records of the
games that ended. Finished games thus reach the coordinator one move after they end, so a
worker that dies loses only its unfinished games: their indices go back to the front of the queue
and a fresh worker replays them from the start (same game ids, same game seeds).

Which path a job takes (`choose_served`): the config's `served` where it says; left null, the
node's `selfplay_served` setting: `on`, `off`, or `auto` (the default), served where Ray gives the
node a GPU. Agents without a network always play in process (nothing to serve).

Resources: the coordinating task keeps the CPU (and, on a GPU node, the GPU) the supervisor gave
it. Each worker reserves one CPU of its own from Ray, so two served jobs on one node never promise
more CPUs than it has. How many (`plan_workers`): the config's `workers`, or the node's CPUs minus
one (the coordinator's), but never more than the node's CPUs free when the job starts, and at
least one: with none free, that one worker runs on the coordinator's reservation instead of
waiting for another job to end. Workers are bound round-robin to the node's servers, one per GPU
(one on the CPU where the node has no GPU); a replacement takes its dead worker's server.

Spread (`nodes: all`): the same coordinator also starts workers on every other alive orchestrator
node of this node's peer view, as many per node as it has CPUs free (`plan_spread`), one CPU each,
and while games are left it looks again every `NEW_NODES_LOOK_S` for nodes that joined since.
They play in process there (rollouts, or the network loaded on that node through
`load_model_here`, which fetches a missing model file, verified): serving stays a matter of the
job's node. Where the job's node plays in process, the coordinator plays its share itself in a
`GameBatch`, as a job alone would, moving its games between collecting its workers' answers. A
worker that dies is replaced on its node while that is alive, else where `place_replacement` says
(another alive node with a CPU free, or the job's node); progress counts the games each node played.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray
import ray._private.state

from actors.inference import InferenceClient, start_inference_servers
from actors.naming import lookup, peer_name, pinned, root_cause
from actors.tasks import load_model_here
from orchestrator.cluster.job_types import JobContext
from orchestrator.nn.checkpoint import load_checkpoint, model_path
from orchestrator.nn.serving import ServingConfig
from orchestrator.play.games import GAMES_CONTEXT_KEY, GameCatalog
from orchestrator.play.selfplay import GameBatch, SearchTally, SelfplayConfig, _make_agent, run_selfplay
from orchestrator.play.served import (
    ServedEvaluator, choose_served, network_key, place_replacement, plan_spread, plan_workers, spread_nodes,
)

SERVED_KINDS = ("mcts", "gumbel")
# Dead workers a job replaces, per worker it runs, before it fails (a worker that keeps dying is a fault, not bad luck).
REPLACEMENTS_PER_WORKER = 3
WORKER_CALL_TIMEOUT_S = 600.0  # one move of every game of one worker; longer means the worker is wedged
# Ray's per-node view of free resources trails the raylet by a resource report or more: how long a job
# waits for it to show the CPU that the job's own task already holds, so as not to count it as free.
RESOURCE_VIEW_LAG_S = 2.0
RESOURCE_VIEW_POLL_S = 0.05
PEER_VIEW_TIMEOUT_S = 30.0  # this node's PeerActor answering with its view of the cluster
NEW_NODES_LOOK_S = 30.0  # how often a job that plays on every node looks for nodes that joined since


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

    def load_model(self, model_id: str) -> Any:
        # An in-process worker may run on another node than the job's data directory: the model file
        # comes into that node's own data directory first (sha256-verified).
        return load_model_here(model_id, self.device)


def _counters(games: GameBatch) -> dict[str, Any]:
    """What a batch of games has done so far, as the coordinator sums it (a heuristic has no evaluator)."""
    stats = getattr(getattr(games.agent, "evaluator", None), "stats", None)
    return {"positions": games.positions, "search": asdict(games.search), "eval": stats() if callable(stats) else {}}


@ray.remote(max_restarts=0)  # its CPU reservation is given at start (see plan_workers, plan_spread)
class SelfplayWorker:
    """Plays the games it is handed, searching through the node's inference server (`server_name`) or,
    without one, with the agent's own evaluator in this process (rollouts, or the network loaded here)."""

    def __init__(self, config: dict[str, Any], job: WorkerJob, worker: int, server_name: str | None, key: str | None,
                 module_ref: list[ray.ObjectRef]) -> None:
        self.config = SelfplayConfig.model_validate(config, context={GAMES_CONTEXT_KEY: job.games})
        self.client, evaluator = None, None
        if server_name is not None:
            self.client = InferenceClient(server_name, key, module_ref[0], self.config.precision)
            evaluator = ServedEvaluator(self.client, job.games.load(self.config.board_type), submit=self.client.submit)
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
            "finished": finished, "in_flight": [g.index for g in self.games.active], **_counters(self.games),
            "server_retries": self.client.retries if self.client else 0,
            "server_reloads": self.client.reloads if self.client else 0,
            "server_channel_batches": self.client.channel_batches if self.client else 0,
            "server_channel_failures": self.client.channel_failures if self.client else 0,
        }


def node_resources(ray_node_id: str) -> dict[str, float]:
    """What the live Ray node declares (its totals)."""
    return next((n["Resources"] for n in ray.nodes() if n["NodeID"] == ray_node_id and n["Alive"]), {})


def free_cpus_per_node() -> dict[str, float]:
    # Ray's books per node: the public ray.available_resources() sums the whole cluster.
    return {node: free.get("CPU", 0.0) for node, free in ray._private.state.available_resources_per_node().items()}


def node_free_cpus(ray_node_id: str) -> float:
    return free_cpus_per_node().get(ray_node_id, 0.0)


def free_cpus_besides_mine(ray_node_id: str) -> float:
    """The node's free CPUs, once Ray's view no longer counts this task's own CPUs as free (see RESOURCE_VIEW_LAG_S)."""
    context = ray.get_runtime_context()
    mine = context.get_assigned_resources().get("CPU", 0.0) if context.worker.mode == ray.WORKER_MODE else 0.0
    ceiling = node_resources(ray_node_id).get("CPU", 0.0) - mine
    deadline = time.monotonic() + RESOURCE_VIEW_LAG_S
    while (free := node_free_cpus(ray_node_id)) > ceiling and time.monotonic() < deadline:
        time.sleep(RESOURCE_VIEW_POLL_S)
    return min(free, ceiling)


def node_gpus(ray_node_id: str) -> int:
    return int(node_resources(ray_node_id).get("GPU", 0.0))


def wants_served(config: SelfplayConfig, ray_node_id: str, node_mode: str = "auto") -> bool:
    """Whether this job plays served; `node_mode` is the node's `selfplay_served` setting."""
    spec = config.agent_spec()
    if spec.model_id is None or spec.kind not in SERVED_KINDS:
        return False
    return choose_served(config.served, node_mode, node_gpus(ray_node_id) > 0)


def other_nodes(node_id: str, home_ray_node: str) -> dict[str, str]:
    """Ray node id -> orchestrator node, for the other alive nodes in this node's peer view (see `spread_nodes`).

    Without a view (no orchestrator node of that name, or it does not answer), nowhere else."""
    try:
        snapshot = ray.get(lookup(peer_name(node_id)).snapshot.remote(), timeout=PEER_VIEW_TIMEOUT_S)
    except (ValueError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return {}
    alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    return spread_nodes(snapshot["peers"], alive, home_ray_node)


class ServedGames:
    """A `GameStepper` whose games are played by search workers (see the module docstring).

    On the job's node: served workers, or, given no `module`, the coordinator's own in-process
    `GameBatch` (the job's node plays as it would alone); with `nodes: all`, in-process workers on
    every other alive node too.
    """

    def __init__(self, config: SelfplayConfig, ctx: JobContext, module: Any | None, *, workers: int | None = None,
                 server_names: list[str] | None = None) -> None:
        self.config = config
        self.ray_node_id = ray.get_runtime_context().get_node_id()
        self.job = WorkerJob(ctx.job_id, ctx.node_id, ctx.attempt, Path(ctx.data_dir), ctx.games)
        model_id = config.agent_spec().model_id
        self.key = None if model_id is None else network_key(model_id, config.precision)
        self.replacements = 0
        self._next_index = 0
        self._workers: dict[int, Any] = {}
        self._node_of: dict[int, str] = {}
        self._cpus_of: dict[int, float] = {}
        self._server_of: dict[int, str | None] = {}
        self._assigned: dict[int, list[int]] = {}
        self._calls: dict[ray.ObjectRef, int] = {}
        self._reports: dict[int, dict[str, Any]] = {}  # each worker's last counters, dead ones' kept
        self._unusable: set[str] = set()  # other Ray nodes where a worker failed to start
        self._started = time.monotonic()
        self.node_ids = {self.ray_node_id: ctx.node_id}
        self.local: GameBatch | None = None
        self.server_names: list[str] = []
        self.module_ref = None
        self.worker_cpus = 0.0
        if module is None:
            self.local = GameBatch(config, ctx, _make_agent(config.agent_spec(), config, ctx))
            self._next_index = 1  # index 0 is the in-process seed, which the local games search with
        else:
            self._start_served(config, ctx, module, workers, server_names)
        self.games_on = {ctx.node_id: 0}
        self._per_node = workers or config.workers
        self._looked_s = time.monotonic()
        if config.nodes == "all":
            self._spread_to_new_nodes()
        self.count = len(self._workers)

    def _spread_to_new_nodes(self) -> int:
        """Workers on the other alive nodes this job has no workers on yet and has not found unusable;
        the number started. At the start that is every other node; later, the nodes that joined."""
        self._looked_s = time.monotonic()
        others = other_nodes(self.job.node_id, self.ray_node_id)
        new = {node: name for node, name in others.items() if node not in self.node_ids and node not in self._unusable}
        if not new:
            return 0
        free = free_cpus_per_node()
        started = 0
        for ray_node, count in plan_spread(self._per_node, {node: free.get(node, 0.0) for node in new}).items():
            self.node_ids[ray_node] = new[ray_node]
            self.games_on.setdefault(new[ray_node], 0)
            for _ in range(count):
                self._start_worker(ray_node, 1.0, None)
            started += count
        return started

    def _start_served(self, config: SelfplayConfig, ctx: JobContext, module: Any, workers: int | None,
                      server_names: list[str] | None) -> None:
        count, self.worker_cpus = plan_workers(workers or config.workers,
                                               node_resources(self.ray_node_id).get("CPU", 1.0),
                                               free_cpus_besides_mine(self.ray_node_id))
        if server_names is None:
            server_names = start_inference_servers(
                ctx.node_id, self.ray_node_id, node_gpus(self.ray_node_id),
                ServingConfig(max_batch=config.served_max_batch, max_wait_s=config.served_max_wait_s))
        self.server_names = list(server_names)
        # On the CPU wherever it was loaded: the server moves it to its device.
        self.module_ref = ray.put(getattr(module, "model", module).to("cpu"))
        for name in self.server_names:
            InferenceClient(name, self.key, self.module_ref, config.precision).ensure_loaded()
        for slot in range(count):
            self._start_worker(self.ray_node_id, self.worker_cpus, self.server_names[slot % len(self.server_names)])

    def _start_worker(self, ray_node: str, cpus: float, server_name: str | None) -> None:
        worker = self._next_index
        self._next_index += 1
        self._workers[worker] = SelfplayWorker.options(
            num_cpus=cpus, scheduling_strategy=pinned(ray_node), name=None,
        ).remote(self.config.model_dump(), self.job, worker, server_name, self.key,
                 [] if server_name is None else [self.module_ref])
        self._node_of[worker] = ray_node
        self._cpus_of[worker] = cpus
        self._server_of[worker] = server_name
        self._assigned[worker] = []

    @property
    def positions(self) -> int:
        return sum(r["positions"] for r in self._reports.values()) + (self.local.positions if self.local else 0)

    def in_flight(self) -> int:
        return sum(len(indices) for indices in self._assigned.values()) + (self.local.in_flight() if self.local else 0)

    def fill(self, remaining: deque[int]) -> None:
        if self.config.nodes == "all" and remaining and time.monotonic() - self._looked_s >= NEW_NODES_LOOK_S:
            self.count += self._spread_to_new_nodes()
        busy = set(self._calls.values())
        for worker, handle in self._workers.items():
            if worker in busy:
                continue
            held = self._assigned[worker]
            new = [remaining.popleft() for _ in range(min(len(remaining), self.config.parallel_games - len(held)))]
            if held or new:
                held.extend(new)
                self._calls[handle.advance.remote(new)] = worker
        if self.local is not None:
            self.local.fill(remaining)

    def step(self, remaining: deque[int]) -> list[dict[str, Any]]:
        finished: list[dict[str, Any]] = []
        wait_s = WORKER_CALL_TIMEOUT_S
        if self.local is not None and self.local.active:
            # The coordinator's own move comes between its workers' answers, which it then only collects.
            finished.extend(self.local.step())
            self.games_on[self.node_ids[self.ray_node_id]] += len(finished)
            wait_s = 0.0
        if not self._calls:
            return finished
        ready, _ = ray.wait(list(self._calls), num_returns=1 if wait_s else len(self._calls), timeout=wait_s)
        if not ready and wait_s:
            raise TimeoutError(f"no self-play worker answered in {WORKER_CALL_TIMEOUT_S:.0f}s")
        for ref in ready:
            worker = self._calls.pop(ref)
            try:
                report = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                self._replace(worker, remaining, exc.actor_init_failed)
                continue
            except ray.exceptions.RayTaskError as exc:
                raise root_cause(exc) from None
            finished.extend(report["finished"])
            self.games_on[self.node_ids[self._node_of[worker]]] += len(report["finished"])
            self._assigned[worker] = report["in_flight"]
            self._reports[worker] = report
        return finished

    def _replace(self, worker: int, remaining: deque[int], init_failed: bool) -> None:
        """A dead worker's unfinished games go back to the front of the queue; a fresh worker takes its
        place, on the same node while it is alive (a replacement on the job's node takes a server there).

        Another node where a worker could not even start (say, the model would not load there) gets
        no more workers from this job: a replacement there would fail the same way."""
        lost = sorted(self._assigned.pop(worker))
        remaining.extendleft(reversed(lost))
        del self._workers[worker]
        dead_on, cpus, server = self._node_of.pop(worker), self._cpus_of.pop(worker), self._server_of.pop(worker)
        self.replacements += 1
        if self.replacements > REPLACEMENTS_PER_WORKER * self.count:
            raise RuntimeError(f"{self.replacements} self-play workers died; giving up")
        # The job's own node is alive while its coordinator runs; another one is asked about.
        others = {} if dead_on == self.ray_node_id else other_nodes(self.job.node_id, self.ray_node_id)
        if init_failed:
            self._unusable.add(dead_on)
        others = {node: name for node, name in others.items() if node not in self._unusable}
        target, cpus = place_replacement(dead_on, cpus, [self.ray_node_id, *others], free_cpus_per_node(),
                                         self.ray_node_id)
        if target != dead_on:
            home_served = target == self.ray_node_id and self.server_names
            server = self.server_names[worker % len(self.server_names)] if home_served else None
            self.node_ids.setdefault(target, others.get(target, target))
            self.games_on.setdefault(self.node_ids[target], 0)
        self._start_worker(target, cpus, server)

    def progress(self) -> dict[str, Any]:
        tally = SearchTally()
        calls = leaves = network_s = 0.0
        retries = reloads = channel_batches = channel_failures = 0
        reports = list(self._reports.values()) + ([_counters(self.local)] if self.local else [])
        for report in reports:
            for name, value in report["search"].items():
                # Workers search side by side: the job's search time is the longest of theirs.
                setattr(tally, name, max(tally.seconds, value) if name == "seconds" else getattr(tally, name) + value)
            calls += report["eval"].get("network_calls", 0.0)
            leaves += report["eval"].get("leaves", 0.0)
            network_s += report["eval"].get("network_s", 0.0)
            retries += report.get("server_retries", 0)
            reloads += report.get("server_reloads", 0)
            channel_batches += report.get("server_channel_batches", 0)
            channel_failures += report.get("server_channel_failures", 0)
        elapsed = max(time.monotonic() - self._started, 1e-9)
        return {
            "in_flight": self.in_flight(), **tally.summary(),
            "eval_network_calls": calls, "eval_leaves": leaves, "eval_leaves_per_call": leaves / calls if calls else 0.0,
            "eval_evals_per_s": leaves / elapsed, "eval_network_s": network_s,
            "served": bool(self.server_names), "workers": self.count, "worker_cpus": self.worker_cpus,
            "servers": len(self.server_names), "worker_replacements": self.replacements,
            "server_retries": retries, "server_reloads": reloads, "server_channel_batches": channel_batches,
            "server_channel_failures": channel_failures, "nodes": dict(self.games_on),
        }

    def close(self) -> None:
        for handle in self._workers.values():
            ray.kill(handle, no_restart=True)
        self._workers.clear()
        self._calls.clear()
        self._assigned.clear()  # abandoned, as the in-process loop abandons its games at a stop
        if self.local is not None:
            self.local.close()
def load_job_model(config: SelfplayConfig, ctx: JobContext) -> Any:
    model_id = config.agent_spec().model_id
    loader = getattr(ctx, "load_model", None)
    return loader(model_id) if loader else load_checkpoint(model_path(ctx.data_dir, model_id), device="cpu")


def run_selfplay_job(config: SelfplayConfig, ctx: JobContext) -> dict[str, Any]:
    """The self-play job type's run: served where `wants_served`, else the in-process loop; workers on
    the other nodes too with `nodes: all`."""
    # A node's job task carries the node's setting; other hosts of this run (tools, tests) have none.
    node_mode = getattr(ctx, "selfplay_served", "auto")
    served = wants_served(config, ray.get_runtime_context().get_node_id(), node_mode)
    if not served and config.nodes == "here":
        return run_selfplay(config, ctx)
    module = load_job_model(config, ctx) if served else None
    return run_selfplay(config, ctx, lambda c, x: ServedGames(c, x, module))
