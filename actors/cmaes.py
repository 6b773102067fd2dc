"""CMAESActor: the cluster's CMA-ES runs, one detached singleton pinned to the Ray head.

Each run is a `CMAESRun` (orchestrator.learn.cmaes). A driver task on the actor's event loop drives them all: it hands
out each generation's candidates as Ray evaluation tasks, placed round-robin over the alive,
non-retired nodes of the leader's peer view (Ray's SPREAD when that view is unavailable), collects
their fitness, tells cma and moves on to the next generation. An evaluation not back within the
run's `eval_timeout_s` is dispatched again under the same candidate id (whichever answer arrives
first counts, a later one is a duplicate); a missing result is never made up. A run with
`external_workers` dispatches nothing: its evaluations come from `POST /cmaes/evaluate`, and only
such a run takes them (as a wins/draws/losses breakdown of exactly its games per candidate; the
fitness is derived from it). What may be tuned per agent kind is `actors.tunables.CMAES_TUNABLES`.

The actor is asyncio throughout, with one injected clock: store calls are awaited, never blocking.

What survives a failure: every run, in the cluster store (kind `cmaes_runs`): the full run record
(cma's state included) and this actor's bookkeeping, rewritten on every change. Writes go through
the current leader's ElectionActor (`leader_write`), so they carry its epoch; while no node leads
they are refused, and no evaluation is handed out until one is saved. When Ray restarts this
actor, it reloads every run and dispatches again the evaluations that were in flight (their tasks
died with their owner).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.cluster_store import head_node_id
from actors.naming import CLUSTER_STORE, NAMESPACE, election_name, lookup, peer_name, pinned, root_cause
from actors.tasks import load_registered
from orchestrator.errors import BadRequest, Conflict, NotFound, Unavailable
from actors.tunables import CMAES_TUNABLES
from orchestrator.learn.cmaes import CMAESConfig, CMAESRun, Candidate, InvalidCMAES, UnknownCandidate
from orchestrator.learn.cmaes_games import candidate_factory, evaluate_candidate, external_outcome
from orchestrator.learn.registry import REGISTRY_KIND, agent_params_doc, canonical_json
from orchestrator.fileio import write_atomic
from orchestrator.play.agents import AgentContext, make_agent
from orchestrator.play.games import BUILTIN

log = logging.getLogger(__name__)
CMAES_ACTOR = "cmaes"
RUNS_KIND = "cmaes_runs"
TICK_S = 0.25
CALL_TIMEOUT_S = 5.0
MAX_ERRORS = 5


def _load_model(model_id: str) -> Any:
    # Evaluations run on any node, so only what a registry record carries inline (agent_params)
    # is certain to load there; checkpoint files stay on the node that trained them.
    return load_registered(model_id, None)


@ray.remote(num_cpus=1, max_retries=0)
def evaluate(config: dict[str, Any], candidate: dict[str, Any]) -> tuple[float, int]:
    """One candidate's fitness match: (mean points against the baseline, games played)."""
    outcome = evaluate_candidate(CMAESConfig.from_dict(config), Candidate(**candidate), CMAES_TUNABLES,
                                 load_model=_load_model)
    return outcome.fitness, outcome.games


@dataclass
class _Entry:
    run: CMAESRun
    external: bool
    eval_timeout_s: float
    created_at: float
    model_id: str | None = None
    finalised_at: float | None = None
    errors: list[str] = field(default_factory=list)
    saved: dict[str, Any] | None = None  # the last document the store accepted
    dirty: bool = True
    save_error: str | None = None
    rearm: bool = False  # after a restart: what was in flight is lost, dispatch it again at once

    @property
    def active(self) -> bool:
        return self.model_id is None and not self.run.finished

    def doc(self) -> dict[str, Any]:
        return {"run": self.run.to_record(), "external": self.external, "eval_timeout_s": self.eval_timeout_s,
                "created_at": self.created_at, "model_id": self.model_id, "finalised_at": self.finalised_at,
                "errors": self.errors}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "_Entry":
        return cls(run=CMAESRun.from_record(doc["run"]), external=doc["external"],
                   eval_timeout_s=doc["eval_timeout_s"], created_at=doc["created_at"], model_id=doc["model_id"],
                   finalised_at=doc["finalised_at"], errors=list(doc["errors"]), saved=doc, dirty=False,
                   rearm=True)

    def note(self, error: str) -> None:
        self.errors = [*self.errors, error][-MAX_ERRORS:]


def _check_agents(config: CMAESConfig, run: CMAESRun) -> None:
    """Build the candidate and the baseline once, so a run that cannot play is refused at start."""
    try:
        candidate_factory(config, run.mean_params(), CMAES_TUNABLES, load_model=_load_model)(0)
    except (ValueError, KeyError) as exc:
        raise BadRequest(f"agent: {exc}", field="agent") from None
    try:
        make_agent(config.baseline, AgentContext(board_type=config.board_type, load_model=_load_model))
    except (ValueError, KeyError) as exc:
        raise BadRequest(f"baseline: {exc}", field="baseline") from None


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class CMAESActor:
    """An asyncio actor. `lock` serialises every change to the runs with its persistence (a change
    and the save that follows it are one step); it is held across awaited store writes, never
    across a blocking call, so the actor's loop keeps serving while a write is in flight."""

    def __init__(self, data_dir: str, clock: Callable[[], float] = time.time) -> None:
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.lock = asyncio.Lock()
        self.entries: dict[str, _Entry] = {}
        self.in_flight: dict[asyncio.Future, tuple[str, str, int]] = {}
        self.loaded = asyncio.Event()
        self._turn = 0
        # An async actor's constructor runs on its event loop, so the driver starts with every incarnation.
        self._driver = asyncio.get_running_loop().create_task(self._drive())

    # --- the driver ---------------------------------------------------------------------------
    async def _drive(self) -> None:
        while True:
            try:
                if not self.loaded.is_set():
                    await self._load()
                async with self.lock:
                    await self._tick()
                if self.in_flight:
                    done, _ = await asyncio.wait(list(self.in_flight), timeout=TICK_S)
                    for future in done:
                        await self._collect(future)
                else:
                    await asyncio.sleep(TICK_S)
            except Exception:  # one bad round must not end every run
                log.exception("CMA-ES driver round failed")
                await asyncio.sleep(TICK_S)

    async def _load(self) -> None:
        docs = await _call(_actor(CLUSTER_STORE).list.remote(RUNS_KIND))
        async with self.lock:
            for run_id, doc in docs.items():
                self.entries.setdefault(run_id, _Entry.from_doc(doc))
        self.loaded.set()

    async def _tick(self) -> None:
        now = self.clock()
        for entry in list(self.entries.values()):
            if not entry.active:
                if entry.dirty:
                    await self._persist(entry)
                continue
            if entry.dirty and not await self._persist(entry):
                continue
            timeout = 0.0 if entry.rearm else entry.eval_timeout_s
            fresh = entry.run.next_candidates(now) + entry.run.overdue(now, timeout)
            if fresh and not await self._persist(entry):
                entry.run = CMAESRun.from_record(entry.saved["run"])  # not handed out after all
                continue
            entry.rearm = False
            if not entry.external:
                nodes = await self._nodes() if fresh else []
                for candidate in fresh:
                    self._dispatch(entry, candidate, nodes)

    def _dispatch(self, entry: _Entry, candidate: Candidate, nodes: list[str]) -> None:
        strategy: Any = "SPREAD"
        if nodes:
            strategy = NodeAffinitySchedulingStrategy(nodes[self._turn % len(nodes)], soft=True)
            self._turn += 1
        ref = evaluate.options(name=f"cmaes:{candidate.candidate_id}#{candidate.attempt}",
                               scheduling_strategy=strategy).remote(entry.run.config.to_dict(), asdict(candidate))
        self.in_flight[asyncio.ensure_future(ref)] = (entry.run.config.run_id, candidate.candidate_id,
                                                      candidate.generation)

    async def _nodes(self) -> list[str]:
        """Ray node ids of the alive, non-retired peers in the leader's view; [] if it cannot be had."""
        try:
            _, leader = await _call(_actor(CLUSTER_STORE).highest_epoch.remote())
            snapshot = await _call(_actor(peer_name(leader)).snapshot.remote())
        except Exception:
            return []
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        return sorted({p["ray_node_id"] for p in snapshot["peers"]
                       if p["state"] == "alive" and p.get("ray_node_id") in alive})

    async def _collect(self, future: asyncio.Future) -> None:
        run_id, candidate_id, generation = self.in_flight.pop(future)
        fitness = games = error = None
        try:
            fitness, games = future.result()
        except ray.exceptions.RayError as exc:
            cause = root_cause(exc)  # a task's own exception, or the worker's death
            error = f"{candidate_id}: {type(cause).__name__}: {(str(cause).splitlines() or [''])[0]}"
        async with self.lock:
            entry = self.entries.get(run_id)
            if entry is None or not entry.active:
                return
            if error is not None:
                entry.note(f"{error} (dispatched again after {entry.eval_timeout_s}s)")
                return
            try:
                entry.run.submit(candidate_id, generation, fitness, games, self.clock())
            except (InvalidCMAES, UnknownCandidate) as exc:
                entry.note(f"{candidate_id}: {exc}")
                return
            entry.dirty = True
            await self._persist(entry)

    # --- persistence --------------------------------------------------------------------------
    async def _leader_write(self, kind: str, key: str, doc: dict[str, Any]) -> None:
        _, leader = await _call(_actor(CLUSTER_STORE).highest_epoch.remote())
        if leader is None:
            raise Unavailable("no leader has begun a term")
        await _call(_actor(election_name(leader)).leader_write.remote(kind, key, doc))

    async def _persist(self, entry: _Entry) -> bool:
        doc = entry.doc()
        try:
            await self._leader_write(RUNS_KIND, entry.run.config.run_id, doc)
        except Exception as exc:  # no leader, a deposed one, or the store restarting: try again next tick
            entry.save_error = f"{type(exc).__name__}: {(str(root_cause(exc)).splitlines() or [''])[0]}"
            return False
        entry.saved, entry.dirty, entry.save_error = doc, False, None
        return True

    # --- API ------------------------------------------------------------------------------------
    async def _ready(self) -> None:
        try:
            await asyncio.wait_for(self.loaded.wait(), 3 * CALL_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise Unavailable("CMA-ES runs are still loading from the cluster store") from None

    def _entry(self, run_id: str) -> _Entry:
        entry = self.entries.get(run_id)
        if entry is None:
            raise NotFound(f"unknown CMA-ES run {run_id!r}", run_id=run_id)
        return entry

    async def start(self, config: dict[str, Any], external: bool, eval_timeout_s: float) -> dict[str, Any]:
        await self._ready()
        cmaes_config = CMAESConfig.from_dict(config)
        try:
            if BUILTIN.load(cmaes_config.board_type).num_players() != 2:
                raise BadRequest("board_type: fitness matches need a two-player game", field="board_type")
        except ValueError as exc:
            raise BadRequest(f"board_type: {exc}", field="board_type") from None
        run = CMAESRun.start(cmaes_config, CMAES_TUNABLES)
        # Building the agents may load a registered model (a blocking store read): off the loop, unlocked.
        await asyncio.to_thread(_check_agents, cmaes_config, run)
        async with self.lock:
            existing = self.entries.get(cmaes_config.run_id)
            if existing is not None:
                same = (existing.run.config.to_dict(), existing.external, existing.eval_timeout_s) == \
                    (cmaes_config.to_dict(), external, eval_timeout_s)
                if not same:
                    raise Conflict(f"CMA-ES run {cmaes_config.run_id!r} exists with a different body",
                                   run_id=cmaes_config.run_id)
                return {"created": False, **self._view(existing)}
            entry = _Entry(run, external, eval_timeout_s, self.clock())
            if not await self._persist(entry):
                raise Unavailable(f"CMA-ES run not saved: {entry.save_error}")
            self.entries[cmaes_config.run_id] = entry
            return {"created": True, **self._view(entry)}

    async def submit(self, run_id: str, generation: int, candidate_id: str, games: int, wins: int, draws: int,
                     losses: int, fitness: float | None = None) -> dict[str, Any]:
        """An external worker's evaluation; see `external_outcome` for what a run takes (409 otherwise)."""
        await self._ready()
        async with self.lock:
            entry = self._entry(run_id)
            if entry.model_id is not None:
                raise Conflict(f"CMA-ES run {run_id!r} is finalised (model {entry.model_id})", run_id=run_id)
            outcome = external_outcome(entry.run.config, entry.external, games=games, wins=wins, draws=draws,
                                       losses=losses, fitness=fitness)
            try:
                result = entry.run.submit(candidate_id, generation, outcome.fitness, outcome.games, self.clock())
            except UnknownCandidate as exc:
                raise BadRequest(f"candidate_id: {exc.message}", field="candidate_id") from None
            if result.accepted:
                entry.dirty = True
                await self._persist(entry)
            return {**asdict(result), "fitness": outcome.fitness, "generation": entry.run.generation,
                    "saved": not entry.dirty}

    async def status(self, run_id: str | None = None) -> dict[str, Any]:
        await self._ready()
        async with self.lock:
            if run_id is not None:
                return self._view(self._entry(run_id))
            return {"runs": [self._view(e) for e in sorted(self.entries.values(), key=lambda e: e.created_at)]}

    async def finalise(self, run_id: str, force: bool) -> dict[str, Any]:
        await self._ready()
        async with self.lock:
            entry = self._entry(run_id)
            if entry.model_id is not None:
                model = await _call(_actor(CLUSTER_STORE).read.remote(REGISTRY_KIND, entry.model_id))
                return {"created": False, "model": model, "run": self._view(entry)}
            status = entry.run.status(self.clock())
            if not status.finished and not force:
                raise Conflict(f"CMA-ES run {run_id!r} is at generation {status.generation} of {status.generations}; "
                               "pass force=true to stop it and register the best so far", run_id=run_id)
            if status.best_params is None:
                raise Conflict(f"CMA-ES run {run_id!r} has no evaluation back yet", run_id=run_id)
            config = entry.run.config
            model_id = f"{run_id}-best"  # deterministic: a retried finalisation registers the same model
            doc = agent_params_doc(model_id, config.board_type, status.best_params, training_config=config.to_dict(),
                                   metrics={"best_fitness": status.best_fitness,
                                            "best_candidate_id": status.best_candidate_id,
                                            "generations": status.generation, "evaluations": status.evaluations_done,
                                            "games": status.games_done, "sigma": status.sigma,
                                            "stop_reason": status.stop_reason, "mean_params": status.mean_params})
            write_atomic(self.data_dir / doc["path"], canonical_json(doc["params"]))
            try:
                await self._leader_write(REGISTRY_KIND, model_id, doc)
            except Exception as exc:
                raise Unavailable(f"model {model_id} not registered: {root_cause(exc)}") from None
            entry.model_id, entry.finalised_at, entry.dirty = model_id, self.clock(), True
            await self._persist(entry)  # if refused now, the driver saves it later; the model is registered
            return {"created": True, "model": doc, "run": self._view(entry)}

    def _view(self, entry: _Entry) -> dict[str, Any]:
        config = entry.run.config
        record = entry.run.to_record()
        state = "finalised" if entry.model_id else "finished" if entry.run.finished else "running"
        candidates = [{"candidate_id": slot["candidate_id"], "generation": record["generation"],
                       "params": config.decode(slot["x"]), "attempts": slot["attempts"],
                       "done": slot["fitness"] is not None, "fitness": slot["fitness"], "games": slot["games"]}
                      for slot in record["slots"]]
        return {"state": state, "board_type": config.board_type, "agent": config.agent, "baseline": config.baseline,
                "games_per_eval": config.games_per_candidate, "external_workers": entry.external,
                "eval_timeout_s": entry.eval_timeout_s, "created_at": entry.created_at,
                **entry.run.status(self.clock()).to_dict(), "candidates": candidates, "model_id": entry.model_id,
                "finalised_at": entry.finalised_at, "errors": entry.errors, "saved": not entry.dirty,
                "save_error": entry.save_error}


def _actor(name: str) -> Any:
    return lookup(name)


async def _call(ref: ray.ObjectRef) -> Any:
    return await asyncio.wait_for(ref, CALL_TIMEOUT_S)


def ensure_cmaes_actor(data_dir: Path) -> Any:
    """Get or create the singleton; `data_dir` is a path on the head node's disk (as for the store)."""
    return CMAESActor.options(name=CMAES_ACTOR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                              scheduling_strategy=pinned(head_node_id())).remote(str(Path(data_dir).expanduser()))
