"""CMA-ES runs as a pure state machine over the `cma` library.

A run tunes named bounded parameters. CMA-ES works in the normalised cube [0, 1]^n (cma's own
bound handling keeps every sample inside it) and candidates are decoded to real values, so one
`sigma0` means the same thing for every parameter whatever its range.

What survives a failure: everything. `to_record()` is plain JSON (the cma strategy pickled to
base64, its random generator inside it), its owner writes it to the cluster store after every
change, and `from_record()` continues exactly where the record left off: a candidate
evaluated before the crash is not asked for again, one that was dispatched but never answered
comes back from `overdue()` under the same id, and no fitness is ever made up. Submissions are
idempotent: a late duplicate of an evaluation (a re-dispatched task that finished twice) is
reported as a duplicate and never counted twice.

What CMA-ES may tune for each agent kind (`Tunable`) is a catalogue handed in by the caller.
The games that score a candidate are in `orchestrator.learn.cmaes_games`.
"""
from __future__ import annotations

import base64
import copy
import math
import pickle
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from orchestrator.errors import BadRequest, NotFound

with warnings.catch_warnings():
    # cma warns at import that matplotlib (plotting only) is missing; nothing here plots.
    warnings.simplefilter("ignore")
    import cma

RECORD_VERSION = 1
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,96}$")
_CANDIDATE_RE = re.compile(r"^(?P<run>.+)-g(?P<gen>\d+)-c(?P<index>\d+)$")
# cma's own evaluation budgets; ours is `generations`, so only cma's convergence and stagnation
# criteria end a run early.
_IGNORED_STOPS = {"maxiter", "maxfevals"}
# Bounds on what a request may ask for: each candidate of a generation is held in memory and the
# whole run is rewritten to the store on every change, so a population or budget beyond these is a
# typo, not a plan.
MAX_POPSIZE = 4096
MAX_GENERATIONS = 1_000_000
MAX_GAMES = 1_000_000
MAX_OPENING_PLIES = 1000
MAX_SEED = 2**63 - 1


class InvalidCMAES(BadRequest, ValueError):
    """Bad input to a run (a config field, a non-finite fitness); the message names the field."""


class UnknownCandidate(NotFound, KeyError):
    """A submission for a candidate this run never asked for, or for the wrong generation."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


def invalid(field_name: str, why: str) -> InvalidCMAES:
    return InvalidCMAES(f"{field_name}: {why}", field=field_name)


def finite(field_name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise invalid(field_name, "must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise invalid(field_name, f"must be finite, got {value}")
    return value


@dataclass(frozen=True)
class CMAESConfig:
    """A run: what is tuned (`params`), how (`popsize`, `sigma0`, `generations`) and against what.

    `agent` is the agent kind whose parameters are tuned (`heuristic`, `mcts_<sims>`,
    `gumbel_<sims>`); each candidate plays `games_per_candidate` paired games against
    `baseline`. `popsize=None` takes cma's default, 4 + 3 ln n.
    """

    run_id: str
    params: Mapping[str, tuple[float, float]]
    generations: int
    popsize: int | None = None
    sigma0: float = 0.25
    seed: int = 0
    initial: Mapping[str, float] | None = None
    board_type: str = "square8"
    agent: str = "heuristic"
    baseline: str = "random"
    games_per_candidate: int = 20
    opening_plies: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, str) or not _RUN_ID_RE.match(self.run_id):
            raise invalid("run_id", "must be 1-96 of [A-Za-z0-9._-]")
        if not isinstance(self.params, Mapping) or not self.params:
            raise invalid("params", "must name at least one parameter as {name: [low, high]}")
        params: dict[str, tuple[float, float]] = {}
        for name, bounds in self.params.items():
            if not isinstance(name, str) or not name:
                raise invalid("params", "parameter names must be non-empty strings")
            if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
                raise invalid(f"params.{name}", "must be [low, high]")
            low, high = finite(f"params.{name}", bounds[0]), finite(f"params.{name}", bounds[1])
            if not low < high:
                raise invalid(f"params.{name}", f"low {low} must be below high {high}")
            params[name] = (low, high)
        object.__setattr__(self, "params", params)
        for name, value, minimum, maximum in (("generations", self.generations, 1, MAX_GENERATIONS),
                                              ("games_per_candidate", self.games_per_candidate, 2, MAX_GAMES),
                                              ("opening_plies", self.opening_plies, 0, MAX_OPENING_PLIES)):
            if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
                raise invalid(name, f"must be an integer from {minimum} to {maximum}")
        if self.popsize is not None and (isinstance(self.popsize, bool) or not isinstance(self.popsize, int)
                                         or not 2 <= self.popsize <= MAX_POPSIZE):
            raise invalid("popsize", f"must be null or an integer from 2 to {MAX_POPSIZE}")
        sigma0 = finite("sigma0", self.sigma0)
        if not 0 < sigma0 <= 1:
            raise invalid("sigma0", "must be in (0, 1], in units of each parameter's range")
        object.__setattr__(self, "sigma0", sigma0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise invalid("seed", f"must be an integer from 0 to {MAX_SEED}")
        if self.initial is not None:
            initial = {}
            for name, value in self.initial.items():
                if name not in params:
                    raise invalid(f"initial.{name}", "is not one of params")
                low, high = params[name]
                value = finite(f"initial.{name}", value)
                if not low <= value <= high:
                    raise invalid(f"initial.{name}", f"{value} is outside [{low}, {high}]")
                initial[name] = value
            object.__setattr__(self, "initial", initial)
        for name in ("board_type", "agent", "baseline"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise invalid(name, "must be a non-empty string")

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "params": {name: [low, high] for name, (low, high) in self.params.items()},
            "generations": self.generations,
            "popsize": self.popsize,
            "sigma0": self.sigma0,
            "seed": self.seed,
            "initial": dict(self.initial) if self.initial is not None else None,
            "board_type": self.board_type,
            "agent": self.agent,
            "baseline": self.baseline,
            "games_per_candidate": self.games_per_candidate,
            "opening_plies": self.opening_plies,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> CMAESConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(value) - known)
        if unknown:
            raise invalid(unknown[0], "is not a CMA-ES config field")
        for name in ("run_id", "params", "generations"):
            if name not in value:
                raise invalid(name, "is required")
        params = value["params"]
        if isinstance(params, Mapping):
            params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        return cls(**{**value, "params": params})

    def decode(self, x: Sequence[float]) -> dict[str, float]:
        """Normalised point in [0, 1]^n -> real parameter values (clipped, as cma's bounds allow)."""
        return {name: low + min(1.0, max(0.0, float(v))) * (high - low)
                for (name, (low, high)), v in zip(self.params.items(), x)}

    def encode(self, values: Mapping[str, float]) -> list[float]:
        return [(values[name] - low) / (high - low) for name, (low, high) in self.params.items()]


@dataclass(frozen=True)
class Candidate:
    """One evaluation to run. The id is deterministic, so a re-dispatch reuses it."""

    candidate_id: str
    generation: int
    params: dict[str, float]
    attempt: int = 1


@dataclass(frozen=True)
class SubmitResult:
    accepted: bool
    duplicate: bool
    generation_complete: bool


@dataclass(frozen=True)
class GenerationSummary:
    generation: int
    best_fitness: float
    mean_fitness: float
    best_candidate_id: str
    sigma: float


@dataclass(frozen=True)
class RunStatus:
    """Where a run stands. `sigma` is cma's step size in the normalised [0, 1] space; `mean_params`
    is cma's current mean (its estimate of the optimum), `best_*` the best single evaluation, which
    noisy fitness makes optimistic. queued/pending/done count the current generation."""

    run_id: str
    generation: int
    generations: int
    finished: bool
    stop_reason: str | None
    best_fitness: float | None
    best_params: dict[str, float] | None
    best_candidate_id: str | None
    mean_params: dict[str, float]
    sigma: float
    popsize: int
    queued: int
    pending: int
    done: int
    evaluations_done: int
    games_done: int
    duplicates: int
    evaluations_per_s: float | None
    eta_s: float | None
    last_result_at: float | None
    history: tuple[GenerationSummary, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "history"}
        out["history"] = [vars(summary).copy() for summary in self.history]
        return out


@dataclass(frozen=True)
class Tunable:
    """What CMA-ES may tune for one agent kind: `params` is {name: (low, high, default)}, and
    `build(spec, ctx, values)` makes the agent (an `AgentSpec` and an `AgentContext` of
    `orchestrator.play.agents`) with `values` for those names. The catalogue of tunables, by agent
    kind, is wired by the caller, where agents are wired together, and handed in."""

    params: Mapping[str, tuple[float, float, float]]
    build: Callable[[Any, Any, dict[str, float]], Any]


Tunables = Mapping[str, Tunable]


def tunable_params(agent: str, tunables: Tunables) -> dict[str, tuple[float, float, float]]:
    """What CMA-ES can tune for an agent name: {name: (low, high, default)}, by the kind of the
    agent (`mcts_<sims>` is kind `mcts`), also when a registered network drives the search
    (`model:<id>+gumbel_64`)."""
    from orchestrator.play.agents import parse_agent

    try:
        spec = parse_agent(agent)
    except ValueError as exc:
        raise invalid("agent", str(exc)) from None
    if spec.params_id is not None:
        raise invalid("agent", f"{agent!r}: tune plain heuristic weights, not a registered parameter set")
    if spec.kind not in tunables:
        raise invalid("agent", f"{agent!r} has no tunable parameters; tunable kinds: {sorted(tunables)}")
    return dict(tunables[spec.kind].params)


class _Normal:
    """cma's sampler with a per-run generator: pickles with the strategy, so a restored run draws
    exactly what the original would have, and runs sharing a process never share a random stream
    (cma's default is numpy's global generator)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, *dims: int) -> np.ndarray:
        return self.rng.standard_normal(dims)


@dataclass
class _Slot:
    candidate_id: str
    x: list[float]
    dispatched_at: float | None = None
    attempts: int = 0
    fitness: float | None = None
    games: int = 0


class CMAESRun:
    """One run. Mutated only through `next_candidates`, `submit` and `overdue`; `now` is injected
    (unix seconds) so tests drive time."""

    def __init__(self, config: CMAESConfig, es: Any, state: Mapping[str, Any]) -> None:
        self.config = config
        self._es = es
        self.generation: int = state["generation"]
        self.stop_reason: str | None = state["stop_reason"]
        self._slots = [_Slot(**slot) for slot in state["slots"]]
        self._history = [GenerationSummary(**summary) for summary in state["history"]]
        self._best: dict[str, Any] | None = state["best"]
        self.evaluations_done: int = state["evaluations_done"]
        self.games_done: int = state["games_done"]
        self.duplicates: int = state["duplicates"]
        self.started_at: float | None = state["started_at"]
        self.last_result_at: float | None = state["last_result_at"]

    @classmethod
    def start(cls, config: CMAESConfig, tunables: Tunables) -> CMAESRun:
        """A new run. Refuses parameters the agent cannot take (by the `tunables` catalogue);
        starts from the agent's own defaults (clipped into the bounds) unless `config.initial`
        says otherwise."""
        tunable = tunable_params(config.agent, tunables)
        unknown = sorted(set(config.params) - set(tunable))
        if unknown:
            raise invalid("params", f"{unknown} are not tunable for {config.agent}; tunable: {sorted(tunable)}")
        defaults = {name: min(high, max(low, tunable[name][2])) for name, (low, high) in config.params.items()}
        initial = config.encode({**defaults, **(config.initial or {})})
        options = {
            "bounds": [0.0, 1.0],
            "randn": _Normal(config.seed),
            "seed": float("nan"),  # the generator above is the seed; nan keeps cma off numpy's global one
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
        }
        if config.popsize is not None:
            options["popsize"] = config.popsize
        es = cma.CMAEvolutionStrategy(initial, config.sigma0, options)
        return cls(config, es, {
            "generation": 0, "stop_reason": None, "slots": [], "history": [], "best": None,
            "evaluations_done": 0, "games_done": 0, "duplicates": 0, "started_at": None, "last_result_at": None,
        })

    # -- the state machine -------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    @property
    def popsize(self) -> int:
        return int(self._es.popsize)

    def candidate_id(self, generation: int, index: int) -> str:
        return f"{self.config.run_id}-g{generation}-c{index}"

    def _candidate(self, slot: _Slot) -> Candidate:
        return Candidate(slot.candidate_id, self.generation, self.config.decode(slot.x), max(1, slot.attempts))

    def next_candidates(self, now: float) -> list[Candidate]:
        """The current generation's evaluations not yet handed out (asking cma for a new
        generation when the last one is complete); [] when all are out or the run is finished."""
        if self.finished:
            return []
        if self.started_at is None:
            self.started_at = float(now)
        if not self._slots:
            solutions = self._es.ask()
            self._slots = [_Slot(self.candidate_id(self.generation, i), [float(v) for v in x])
                           for i, x in enumerate(solutions)]
        fresh = [slot for slot in self._slots if slot.dispatched_at is None and slot.fitness is None]
        for slot in fresh:
            slot.dispatched_at, slot.attempts = float(now), slot.attempts + 1
        return [self._candidate(slot) for slot in fresh]

    def overdue(self, now: float, timeout_s: float) -> list[Candidate]:
        """Dispatched evaluations with no result after `timeout_s`: re-armed at `now` and returned
        under their same ids for re-dispatch. A missing result is never filled in."""
        timeout_s = finite("timeout_s", timeout_s)
        late = [slot for slot in self._slots
                if slot.fitness is None and slot.dispatched_at is not None and now - slot.dispatched_at >= timeout_s]
        for slot in late:
            slot.dispatched_at, slot.attempts = float(now), slot.attempts + 1
        return [self._candidate(slot) for slot in late]

    def submit(self, candidate_id: str, generation: int, fitness: float, games: int, now: float) -> SubmitResult:
        """Record one evaluation. Raises InvalidCMAES (a ValueError) for a non-finite fitness or a bad
        game count, UnknownCandidate (a KeyError) for an id this run never asked for or the wrong
        generation; a second result for an evaluated candidate is ignored and reported as duplicate."""
        fitness = finite("fitness", fitness)
        if isinstance(games, bool) or not isinstance(games, (int, np.integer)) or games < 1:
            raise invalid("games", "must be a positive integer")
        if isinstance(generation, bool) or not isinstance(generation, (int, np.integer)):
            raise invalid("generation", "must be an integer")
        slot = next((s for s in self._slots if s.candidate_id == candidate_id), None)
        if slot is not None:
            if generation != self.generation:
                raise UnknownCandidate(f"candidate {candidate_id} belongs to generation {self.generation}, "
                                       f"not {generation}", candidate_id=candidate_id)
            if slot.fitness is not None:
                self.duplicates += 1
                return SubmitResult(accepted=False, duplicate=True, generation_complete=False)
            slot.fitness, slot.games = fitness, int(games)
            self.last_result_at = float(now)
            self.evaluations_done += 1
            self.games_done += int(games)
            if self._best is None or fitness > self._best["fitness"]:
                self._best = {"fitness": fitness, "params": self.config.decode(slot.x),
                              "candidate_id": candidate_id}
            if all(s.fitness is not None for s in self._slots):
                self._tell()
                return SubmitResult(accepted=True, duplicate=False, generation_complete=True)
            return SubmitResult(accepted=True, duplicate=False, generation_complete=False)
        # Every candidate of a completed generation has its result, so a known id from an
        # earlier generation can only be a late duplicate.
        match = _CANDIDATE_RE.match(candidate_id) if isinstance(candidate_id, str) else None
        if (match and match["run"] == self.config.run_id and int(match["gen"]) < len(self._history)
                and int(match["index"]) < self.popsize):
            if int(match["gen"]) != generation:
                raise UnknownCandidate(f"candidate {candidate_id} belongs to generation {match['gen']}, "
                                       f"not {generation}", candidate_id=candidate_id)
            self.duplicates += 1
            return SubmitResult(accepted=False, duplicate=True, generation_complete=False)
        raise UnknownCandidate(f"unknown candidate {candidate_id!r} in run {self.config.run_id}",
                               candidate_id=str(candidate_id))

    def _tell(self) -> None:
        solutions = [np.asarray(slot.x, dtype=float) for slot in self._slots]
        fitnesses = [slot.fitness for slot in self._slots]
        # cma minimises; fitness here is points scored, higher is better.
        self._es.tell(solutions, [-f for f in fitnesses])
        best = max(range(len(fitnesses)), key=fitnesses.__getitem__)
        self._history.append(GenerationSummary(
            generation=self.generation, best_fitness=fitnesses[best],
            mean_fitness=float(np.mean(fitnesses)), best_candidate_id=self._slots[best].candidate_id,
            sigma=float(self._es.sigma)))
        self._slots = []
        self.generation += 1
        if self.generation >= self.config.generations:
            self.stop_reason = "generations"
        else:
            stops = sorted(set(self._es.stop()) - _IGNORED_STOPS)
            if stops:
                self.stop_reason = "cma:" + ",".join(stops)

    # -- reporting ---------------------------------------------------------------------------

    def mean_params(self) -> dict[str, float]:
        """cma's current mean, its best estimate of the optimum (less noisy than the best single score)."""
        return self.config.decode(list(self._es.result.xfavorite))

    def status(self, now: float) -> RunStatus:
        done = sum(1 for s in self._slots if s.fitness is not None)
        pending = sum(1 for s in self._slots if s.fitness is None and s.dispatched_at is not None)
        queued = 0 if self.finished else (len(self._slots) or self.popsize) - done - pending
        elapsed = None if self.started_at is None else now - self.started_at
        rate = self.evaluations_done / elapsed if elapsed and elapsed > 0 and self.evaluations_done else None
        remaining = 0 if self.finished else (self.config.generations - self.generation) * self.popsize - done
        eta = 0.0 if self.finished else (remaining / rate if rate else None)
        best = self._best or {}
        return RunStatus(
            run_id=self.config.run_id, generation=self.generation, generations=self.config.generations,
            finished=self.finished, stop_reason=self.stop_reason, best_fitness=best.get("fitness"),
            best_params=dict(best["params"]) if best else None, best_candidate_id=best.get("candidate_id"),
            mean_params=self.mean_params(), sigma=float(self._es.sigma), popsize=self.popsize,
            queued=queued, pending=pending, done=done, evaluations_done=self.evaluations_done,
            games_done=self.games_done, duplicates=self.duplicates, evaluations_per_s=rate, eta_s=eta,
            last_result_at=self.last_result_at, history=tuple(self._history))

    # -- persistence -------------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """Plain JSON: the whole run, cma's state (pickled, base64) included."""
        return {
            "version": RECORD_VERSION,
            "config": self.config.to_dict(),
            "generation": self.generation,
            "stop_reason": self.stop_reason,
            "slots": [{**vars(slot), "x": list(slot.x)} for slot in self._slots],
            "history": [vars(summary).copy() for summary in self._history],
            "best": copy.deepcopy(self._best),
            "evaluations_done": self.evaluations_done,
            "games_done": self.games_done,
            "duplicates": self.duplicates,
            "started_at": self.started_at,
            "last_result_at": self.last_result_at,
            "es": base64.b64encode(pickle.dumps(self._es, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii"),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CMAESRun:
        """Inverse of `to_record`. The record comes from the cluster store, which only the
        fenced owner of the run writes, so unpickling it is unpickling our own bytes."""
        if record.get("version") != RECORD_VERSION:
            raise invalid("version", f"unsupported CMA-ES record version {record.get('version')!r}")
        config = CMAESConfig.from_dict(record["config"])
        try:
            es = pickle.loads(base64.b64decode(record["es"], validate=True))
            return cls(config, es, copy.deepcopy(dict(record)))
        except (KeyError, TypeError, ValueError, AttributeError, pickle.UnpicklingError) as exc:
            raise invalid("record", f"CMA-ES record of run {config.run_id} is corrupt: {exc!r}") from None
