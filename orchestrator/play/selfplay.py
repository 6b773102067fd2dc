"""The self-play job: many games at once through one batched agent, written as whole JSONL files.

`run_selfplay` keeps up to `parallel_games` games in flight and hands all of their current states
to the agent's `select_many` together, so a network-driven search evaluates the leaves of every
game in the same forward passes. Finished games are buffered and flushed as a new file
`<data_dir>/selfplay/<board_type>/<job_id>/games-<attempt>-<n>.jsonl` (see records.py), after
which the job reports progress and learns whether to stop.

Restarts are idempotent: game i of a job always has the id `<job_id>-<i>`; a new attempt first reads
the job's directory (skipping torn lines) and plays only the indices that have no record yet. A
graceful stop flushes the finished games and abandons the ones in flight, which the next attempt
replays from the start.

Exploration: `mcts` agents get Dirichlet noise at the root; for the first `temperature_moves`
plies of a game the move is sampled from the search's policy with the game's own RNG (default:
an eighth of the game's maximum length, and none for `gumbel`, whose root already samples
through its Gumbel noise).

Tree reuse (`tree_reuse`, on by default): `mcts` and `gumbel` agents keep each game's subtree under
the move played, so its visits count toward the next move's budget and only the rest is simulated;
progress reports the visits carried over (`carried_simulations`, and `carried_per_search` per
searched move).

Served inference (`served`; by default on where the node has a GPU): the job's games are spread
over several search workers that share the node's batched inference server; the host wires that
in (actors/selfplay_workers.py). Each worker steps its games through a `GameBatch`, the same code
as the in-process loop here, so records, game ids and seeds are the same on both paths.

Spread self-play (`nodes: all`): the job's node plays as above, and search workers on every other
alive node play games in process there, handed out and recorded by the same coordinator, so the
files, game ids and seeds are those of a job played on one node.
"""
from __future__ import annotations

import hashlib
import random
import re
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import pyspiel
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from orchestrator.cluster.job_types import JobContext, JobType
from orchestrator.fileio import TEMP_SUFFIX
from orchestrator.nn.checkpoint import load_checkpoint, model_path
from orchestrator.nn.serving import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_S, Precision
from orchestrator.play.agents import DEFAULT_MODEL_SEARCH, Agent, AgentContext, AgentSpec, make_agent, parse_agent
from orchestrator.play.games import DEFAULT_BOARD_TYPE, catalog_in
from orchestrator.play.evaluators import LeafEvaluator
from orchestrator.play.gumbel import GumbelAgent, GumbelConfig, build_gumbel
from orchestrator.play.mcts import MCTSAgent, MCTSConfig, build_mcts
from orchestrator.play.records import (
    CODE_VERSION, ReadStats, game_files, game_id, read_games, write_records,
)

DEFAULT_AGENT = "gumbel_64"
SELFPLAY_DIRICHLET_EPSILON = 0.25
_SAFE_COMPONENT = re.compile(r"[^A-Za-z0-9._=-]")


class SelfplayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    board_type: str = DEFAULT_BOARD_TYPE
    agent: str | None = Field(default=None, description="agent name; with model_id, the search it drives")
    model_id: str | None = Field(default=None, description=f"shorthand for agent model:<id>+{DEFAULT_MODEL_SEARCH}")
    num_games: int = Field(ge=1, le=1_000_000)
    parallel_games: int = Field(default=16, ge=1, le=1024)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    max_moves: int | None = Field(default=None, ge=1, description="end a game as max_length after this many moves")
    temperature_moves: int | None = Field(default=None, ge=0, description="plies whose move is sampled from the policy")
    games_per_file: int = Field(default=64, ge=1, le=100_000)
    flush_interval_s: float = Field(default=60.0, gt=0, description="flush and report at least this often")
    tree_reuse: bool = Field(
        default=True,
        description="mcts/gumbel: keep the subtree under the move played; its visits count toward the next search's budget",
    )
    served: bool | None = Field(
        default=None,
        description="search workers against the node's inference servers; null: the node's selfplay_served setting "
                    "(default auto: on where the node has a GPU)",
    )
    workers: int | None = Field(
        default=None, ge=1, le=256,
        description="served: search workers, one CPU each, at most the node's free CPUs; null: the node's CPUs minus one",
    )
    nodes: Literal["here", "all"] = Field(
        default="here",
        description="all: also play on every other alive node, a search worker per free CPU there but one (one of "
                    "two or more is left for other work; at most `workers` per node), each playing in process; the "
                    "job's node plays as `served` says",
    )
    precision: Precision = Field(
        default="auto",
        description="the network's precision, served or in process: auto is bfloat16 on a GPU (float16 where it "
                    "lacks bfloat16) and on a CPU with bfloat16 instructions, float32 on other CPUs",
    )
    served_max_batch: int = Field(default=DEFAULT_MAX_BATCH, ge=1, le=65_536,
                                  description="served: leaf rows per forward pass, if this job starts the node's server")
    served_max_wait_s: float = Field(default=DEFAULT_MAX_WAIT_S, ge=0, le=1.0,
                                     description="served: how long a request waits for others, if this job starts the server")

    @field_validator("board_type")
    @classmethod
    def _known_game(cls, value: str, info: ValidationInfo) -> str:
        catalog_in(info.context).spec(value)  # raises UnknownGame (a ValueError) with the known names
        return value

    @model_validator(mode="after")
    def _valid_agent(self) -> "SelfplayConfig":
        self.agent_spec()
        return self

    def agent_spec(self) -> AgentSpec:
        """The agent all seats play, combining `agent` and `model_id`."""
        if self.model_id is None:
            return parse_agent(self.agent or DEFAULT_AGENT)
        if self.agent is None:
            return parse_agent(f"model:{self.model_id}+{DEFAULT_MODEL_SEARCH}")
        spec = parse_agent(self.agent)
        if spec.model_id is None:
            return parse_agent(f"model:{self.model_id}+{self.agent}")
        if spec.model_id != self.model_id:
            raise ValueError(f"agent {self.agent!r} names model {spec.model_id!r} but model_id is {self.model_id!r}")
        return spec


@dataclass(frozen=True)
class _Game:
    index: int
    state: pyspiel.State
    rng: random.Random
    seed: int
    started_at: str
    moves: list[int] = field(default_factory=list)
    policies: list[dict[str, float]] = field(default_factory=list)


@dataclass
class SearchTally:
    """Search effort across a job, for `/mcts/stats`: simulations run, visits carried over by tree reuse, depth, time."""

    simulations: float = 0.0
    carried: float = 0.0
    searches: int = 0
    depth_sum: float = 0.0
    seconds: float = 0.0

    def add(self, decisions: list) -> None:
        for decision in decisions:
            sims = decision.stats.get("simulations", 0.0)
            self.simulations += sims
            self.depth_sum += sims * decision.stats.get("mean_depth", 0.0)
            if "carried_simulations" in decision.stats:  # a searched move (forced moves are not searched)
                self.carried += decision.stats["carried_simulations"]
                self.searches += 1
        # One batched search serves every decision of the call: count its time once.
        self.seconds += max((d.stats.get("search_s", 0.0) for d in decisions), default=0.0)

    def summary(self) -> dict[str, float]:
        return {
            "simulations": self.simulations,
            "simulations_per_s": self.simulations / self.seconds if self.seconds > 0 else 0.0,
            "mean_depth": self.depth_sum / self.simulations if self.simulations else 0.0,
            "carried_simulations": self.carried,
            "carried_per_search": self.carried / self.searches if self.searches else 0.0,
        }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _derive_seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # 31 bits: exact in every JSON reader


def job_directory(data_dir: Path, board_type: str, job_id: str) -> Path:
    if not job_id or job_id in (".", "..") or _SAFE_COMPONENT.search(job_id):
        raise ValueError(f"job_id {job_id!r} is not a safe path component ([A-Za-z0-9._=-])")
    # openspiel:<game(params)> names carry ':' and parentheses, which do not belong in paths.
    return Path(data_dir) / "selfplay" / _SAFE_COMPONENT.sub("_", board_type) / job_id


def _sample(policy: dict[int, float], rng: random.Random) -> int:
    actions = list(policy)
    return rng.choices(actions, weights=[policy[a] for a in actions])[0]


def _resume(directory: Path, config: SelfplayConfig, job_id: str, attempt: int) -> tuple[deque[int], ReadStats, int]:
    """Game indices still to play, what reading the existing files skipped, and the last file number of this attempt."""
    for stale in directory.glob(f".*{TEMP_SUFFIX}"):
        stale.unlink(missing_ok=True)  # a killed writer's temp file: never renamed, so never part of the data
    existing = ReadStats()
    done_ids = {r["game_id"] for r in read_games(game_files(directory), existing)}
    remaining = deque(i for i in range(config.num_games) if game_id(job_id, i) not in done_ids)
    prefix = f"games-{attempt}-"
    numbers = (p.stem[len(prefix):] for p in directory.glob(f"{prefix}*.jsonl"))
    return remaining, existing, max((int(n) for n in numbers if n.isdigit()), default=0)


def _make_agent(spec: AgentSpec, config: SelfplayConfig, ctx: JobContext, evaluator: LeafEvaluator | None = None,
                seed_salt: tuple[object, ...] = ()) -> Agent:
    """The job's agent; a search given `evaluator` uses it instead of loading the model here (served inference).

    `seed_salt` tells apart the agents of several workers of one attempt (none: the in-process seed)."""
    def load_from_data_dir(model_id: str) -> Any:
        return load_checkpoint(model_path(ctx.data_dir, model_id), device=ctx.device).model

    # A fresh seed per attempt: replayed games need not repeat the search noise of the lost ones.
    actx = AgentContext(
        board_type=config.board_type, seed=_derive_seed(config.seed, ctx.job_id, ctx.attempt, *seed_salt),
        load_model=getattr(ctx, "load_model", None) or load_from_data_dir, device=ctx.device, games=ctx.games,
        precision=config.precision,
    )
    if spec.kind == "mcts":
        options = {"dirichlet_epsilon": SELFPLAY_DIRICHLET_EPSILON, "tree_reuse": config.tree_reuse}
        if evaluator is not None:
            return MCTSAgent(spec.name, evaluator, replace(MCTSConfig(simulations=spec.budget), **options), seed=actx.seed)
        return build_mcts(spec, actx, **options)
    if spec.kind == "gumbel":
        if evaluator is not None:
            return GumbelAgent(spec.name, evaluator, GumbelConfig(simulations=spec.budget, tree_reuse=config.tree_reuse),
                               seed=actx.seed)
        return build_gumbel(spec, actx, tree_reuse=config.tree_reuse)
    return make_agent(spec, actx)


def base_record(config: SelfplayConfig, ctx: JobContext) -> dict[str, Any]:
    """The fields every game record of this attempt shares."""
    spec, gspec = config.agent_spec(), ctx.games.spec(config.board_type)
    return {
        "job_id": ctx.job_id, "node_id": ctx.node_id, "attempt": ctx.attempt,
        "board_type": config.board_type, "game": gspec.game_string,
        "agents": [spec.name] * gspec.num_players, "model_ids": [spec.model_id] * gspec.num_players,
        "code_version": CODE_VERSION,
    }


class GameStepper(Protocol):
    """Where a job's games are played: in this process (`GameBatch`) or by search workers."""

    positions: int

    def in_flight(self) -> int:
        """Games started and not yet finished."""

    def fill(self, remaining: deque[int]) -> None:
        """Start games from the front of `remaining` while there is room."""

    def step(self, remaining: deque[int]) -> list[dict[str, Any]]:
        """Play on; the records of games that ended. Games lost on the way go back to `remaining`."""

    def progress(self) -> dict[str, Any]:
        """In-flight games, search and evaluator counters for the job's progress report."""

    def close(self) -> None:
        """Release whatever plays the games; unfinished games are abandoned."""


class GameBatch:
    """Games in flight under one agent: `step` asks it for a move in all of them at once and plays them.

    In a job it holds up to `parallel_games` games (a `GameStepper`); a search worker holds one too.
    """

    def __init__(self, config: SelfplayConfig, ctx: JobContext, agent: Agent) -> None:
        spec = config.agent_spec()
        self.config = config
        self.job_id = ctx.job_id
        self.agent = agent
        self.game = ctx.games.load(config.board_type)
        self.record = base_record(config, ctx)
        temperature_moves = config.temperature_moves
        if temperature_moves is None:
            temperature_moves = 0 if spec.kind == "gumbel" else max(1, ctx.games.spec(config.board_type).max_game_length // 8)
        self.temperature_moves = temperature_moves
        self.active: list[_Game] = []
        self.positions = 0
        self.search = SearchTally()

    def start(self, index: int) -> None:
        seed = _derive_seed(self.config.seed, self.job_id, index)
        self.active.append(_Game(index, self.game.new_initial_state(), random.Random(seed), seed, _now()))

    def in_flight(self) -> int:
        return len(self.active)

    def fill(self, remaining: deque[int]) -> None:
        while remaining and len(self.active) < self.config.parallel_games:
            self.start(remaining.popleft())

    def progress(self) -> dict[str, Any]:
        report = {"in_flight": len(self.active), **self.search.summary()}
        # Only search agents count leaf evaluations; a heuristic's evaluator has no counters.
        evaluator_stats = getattr(getattr(self.agent, "evaluator", None), "stats", None)
        if callable(evaluator_stats):
            report.update({f"eval_{k}": v for k, v in evaluator_stats().items()})
        return report

    def close(self) -> None:
        self.active = []

    def step(self, remaining: deque[int] | None = None) -> list[dict[str, Any]]:
        """One move in every game in flight; the records of the games that ended (none is ever lost here)."""
        # Every game in flight goes to the agent at once, so a network search batches their leaves.
        decisions = self.agent.select_many([g.state for g in self.active])
        self.search.add(decisions)
        finished, still_playing = [], []
        for g, decision in zip(self.active, decisions):
            action = _sample(decision.policy, g.rng) if len(g.moves) < self.temperature_moves else decision.action
            g.moves.append(action)
            g.policies.append({str(a): q for a, p in decision.policy.items() if (q := round(p, 6)) > 0})
            g.state.apply_action(action)
            self.positions += 1
            terminal = g.state.is_terminal()
            if terminal or (self.config.max_moves is not None and len(g.moves) >= self.config.max_moves):
                finished.append({
                    "game_id": game_id(self.job_id, g.index), "game_index": g.index, **self.record,
                    "seed": g.seed, "moves": g.moves, "policies": g.policies,
                    "outcome": [float(r) for r in g.state.returns()], "length": len(g.moves),
                    "termination": "terminal" if terminal else "max_length",
                    "started_at": g.started_at, "finished_at": _now(),
                })
            else:
                still_playing.append(g)
        self.active = still_playing
        return finished


def run_selfplay(config: SelfplayConfig, ctx: JobContext,
                 make_games: Callable[[SelfplayConfig, JobContext], GameStepper] | None = None) -> dict[str, Any]:
    """Play the job's games that have no record yet; `make_games` (default: in this process) says where."""
    spec = config.agent_spec()
    directory = job_directory(Path(ctx.data_dir), config.board_type, ctx.job_id)
    directory.mkdir(parents=True, exist_ok=True)
    remaining, existing, file_number = _resume(directory, config, ctx.job_id, ctx.attempt)
    already = config.num_games - len(remaining)
    games = make_games(config, ctx) if make_games else GameBatch(config, ctx, _make_agent(spec, config, ctx))

    started = time.monotonic()
    last_report = started
    finished: list[dict[str, Any]] = []
    written = files = 0
    stopped = False

    def progress() -> dict[str, Any]:
        elapsed = max(time.monotonic() - started, 1e-9)
        report = {
            "games_done": already + written, "games_total": config.num_games, "positions": games.positions,
            "positions_per_s": games.positions / elapsed, "games_per_s": written / elapsed, "files": files,
            "attempt": ctx.attempt, "resumed_games": already, "skipped_lines": existing.skipped,
            "agent": spec.name, **games.progress(),
        }
        return report

    try:
        while (remaining or games.in_flight()) and not stopped:
            games.fill(remaining)
            finished.extend(games.step(remaining))
            now = time.monotonic()
            due = now - last_report >= config.flush_interval_s
            if finished and (len(finished) >= config.games_per_file or due or not (remaining or games.in_flight())):
                file_number += 1
                write_records(directory, f"games-{ctx.attempt}-{file_number:05d}.jsonl", finished)
                written += len(finished)
                files += 1
                finished = []
                due = True
            if due:
                # Reports only follow a flush (or a quiet interval), so a stop never strands finished games.
                last_report = now
                stopped = bool(ctx.report(progress()))
    finally:
        games.close()
    result = progress()
    result.update({"stopped": stopped, "complete": already + written == config.num_games,
                   "directory": str(directory), "elapsed_s": time.monotonic() - started})
    return result


SELFPLAY = JobType(name="selfplay", config_model=SelfplayConfig, run=run_selfplay, wants_gpu=True)
