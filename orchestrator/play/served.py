"""The client side of served inference: a leaf evaluator whose network runs elsewhere.

`ServedEvaluator` is a `NetworkEvaluator` without a network: it builds the leaves' observation
tensors here (OpenSpiel writes them straight into a numpy array), hands the float32 batch to
`forward` (in production a call to the node's inference server, see actors/inference.py) and
turns the raw logits and values into priors and per-seat values exactly as the in-process
evaluator does, with the same code. Given the same batch, a server running the network in the
same precision returns the same numbers as the in-process network, so the search makes the same
moves.

Also here, as pure decisions that the Ray side (actors/selfplay_workers.py) applies: the key a
job's network is served under (`network_key`), whether a job is served (`choose_served`), how
many search workers it runs and what each reserves (`plan_workers`), and, for a job that plays on
every node, which other nodes take workers and how many (`spread_nodes`, `plan_spread`) and where
a dead worker's replacement goes (`place_replacement`).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pyspiel
from open_spiel.python.observation import make_observation

from orchestrator.play.evaluators import NetworkEvaluator

RemoteForward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
RemoteSubmit = Callable[[np.ndarray], Callable[[], tuple[np.ndarray, np.ndarray]]]
SERVED_MODES = ("auto", "on", "off")  # the node setting `selfplay_served`


def network_key(model_id: str, precision: str) -> str:
    """What a job's network is served under: jobs of one model in one precision share it, and a job
    asking another precision gets a network of its own (`auto`, the default, keeps the bare model id)."""
    return model_id if precision == "auto" else f"{model_id}@{precision}"


def choose_served(job_served: bool | None, node_mode: str, node_has_gpu: bool) -> bool:
    """The job's own `served` wins; left null, the node's setting decides (auto: where the node has a GPU)."""
    if node_mode not in SERVED_MODES:
        raise ValueError(f"selfplay_served must be one of {SERVED_MODES}, not {node_mode!r}")
    if job_served is not None:
        return job_served
    return node_has_gpu if node_mode == "auto" else node_mode == "on"


def plan_workers(requested: int | None, node_cpus: float, free_cpus: float) -> tuple[int, float]:
    """(search workers, CPUs each reserves) for a served job whose coordinator already holds its own CPU.

    Wanted: `requested`, or the node's CPUs minus one (the coordinator's). Each worker reserves a
    whole CPU, so jobs side by side never promise Ray more CPUs than the node has; the count is
    bounded by the CPUs free now, because a worker Ray cannot place would hold its games hostage
    until some other job ends. With no CPU free at all, one worker runs on the coordinator's
    reservation (the coordinator only waits on its workers), so the job still starts.
    """
    wanted = requested if requested is not None else max(1, int(node_cpus) - 1)
    free = int(free_cpus)
    if free < 1:
        return 1, 0.0
    return max(1, min(wanted, free)), 1.0


def spread_nodes(peers: Iterable[Mapping[str, Any]], alive_ray_nodes: Iterable[str],
                 home_ray_node: str) -> dict[str, str]:
    """The other Ray nodes a job may spread to: Ray node id -> the orchestrator node on it.

    Only nodes that an alive peer of this node's view runs on (a bare Ray node hosts no
    orchestrator to fetch models or answer for it), whose Ray node is alive, and not the job's own
    (its workers are planned by `plan_workers`). Two orchestrator nodes on one Ray node share its
    CPUs, so each Ray node appears once, under the first node id in order.
    """
    alive = set(alive_ray_nodes)
    nodes: dict[str, str] = {}
    for peer in sorted(peers, key=lambda p: p["node_id"]):
        ray_node = peer.get("ray_node_id")
        if peer.get("state") == "alive" and ray_node in alive and ray_node != home_ray_node:
            nodes.setdefault(ray_node, peer["node_id"])
    return nodes


def plan_spread(requested: int | None, free_cpus: Mapping[str, float]) -> dict[str, int]:
    """Search workers per other node (Ray node id -> count), one CPU each.

    A node keeps one of its free CPUs for other work when it has two or more: self-play would
    otherwise hold every CPU of the cluster for its whole run, and the gating games a continuous
    pipeline plays meanwhile, and that node's own jobs, would wait for it (the job's node keeps one
    for its coordinator the same way). `requested`, where given, caps each node; a node with none
    free takes none, since a worker Ray cannot place would hold its games hostage.
    """
    plan = {}
    for ray_node, free in free_cpus.items():
        spare = int(free) - 1 if free >= 2 else int(free)
        count = spare if requested is None else min(requested, spare)
        if count >= 1:
            plan[ray_node] = count
    return plan


def place_replacement(dead_on: str, dead_cpus: float, alive: Iterable[str], free_cpus: Mapping[str, float],
                      home: str) -> tuple[str, float]:
    """(Ray node, CPUs to reserve) for the replacement of a worker that died on `dead_on`.

    Its own node while that is alive (the dead worker's reservation is free again); else the alive
    node with the most CPUs free, one of them reserved; else the job's own node, which is alive while
    its coordinator runs, on the coordinator's reservation if it has no CPU free (as `plan_workers`).
    """
    alive = set(alive)
    if dead_on in alive:
        return dead_on, dead_cpus
    candidates = sorted((-int(free_cpus.get(node, 0.0)), node) for node in alive if node != home)
    if candidates and -candidates[0][0] >= 1:
        return candidates[0][1], 1.0
    return home, 1.0 if free_cpus.get(home, 0.0) >= 1 else 0.0


class ServedEvaluator(NetworkEvaluator):
    """Observations and the post-processing here, the forward pass through `forward`.

    Given `submit` (send a batch now, wait for its answer later, as `InferenceClient.submit` does),
    the evaluator is asynchronous: `evaluate_async` returns while the server computes, and a
    search (`BatchedSearch`) keeps two groups of games going, one descending while the other's
    leaves are evaluated, so neither this process nor the server waits for the other.
    """

    def __init__(self, forward: RemoteForward, game: pyspiel.Game, submit: RemoteSubmit | None = None) -> None:
        # NetworkEvaluator.__init__ is skipped on purpose: it prepares a network, and there is none
        # here. These are the attributes its observations() and evaluate() read.
        self.observation_shape = tuple(game.observation_tensor_shape())
        self.num_players = game.num_players()
        self.num_actions = game.num_distinct_actions()
        self._observation = make_observation(game)
        self._remote_forward = forward
        self._submit = submit
        self.asynchronous = submit is not None
        self.calls = 0
        self.leaves = 0
        self.seconds = 0.0  # in this process: building batches, waiting and post-processing
        self.network_seconds = 0.0  # here: time waiting for the server, transfer and batching included

    def forward(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        logits, values = self._remote_forward(np.ascontiguousarray(observations, dtype=np.float32))
        self.network_seconds += time.perf_counter() - started
        return _widened(logits, values)

    def evaluate_async(
        self, states: Sequence[pyspiel.State], legal_actions: Sequence[Sequence[int]]
    ) -> Callable[[], tuple[list[np.ndarray], np.ndarray]]:
        """`evaluate` with its batch sent now: the returned call waits for the answer and gives what `evaluate` would."""
        if self._submit is None:
            raise RuntimeError("this evaluator was given no submit: it evaluates synchronously only")
        started = time.perf_counter()
        players = [s.current_player() for s in states]
        wait = self._submit(np.ascontiguousarray(self.observations(states, players), dtype=np.float32))
        sending_s = time.perf_counter() - started

        def answer() -> tuple[list[np.ndarray], np.ndarray]:
            waited = time.perf_counter()
            logits, values = wait()
            waiting_s = time.perf_counter() - waited
            self.network_seconds += waiting_s
            return self._answer(legal_actions, players, *_widened(logits, values), sending_s + waiting_s)

        return answer


def _widened(logits: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # The in-process evaluator widens its float32 outputs to float64 the same way.
    return np.asarray(logits, dtype=np.float64), np.asarray(values, dtype=np.float64)
