"""Policy/value training of the residual network on self-play records, and the shared training loop.

`build_dataset` replays each recorded game with OpenSpiel, one game at a time, and turns every
position that has a search distribution into a row: the observation of the player to move, the
visit distribution expanded over all actions, and the final outcome for that player (seat order
for games of more than two players). A game that does not replay cleanly is skipped as a whole and
counted. Given a cache directory, the rows go to memory-mapped files there
(`orchestrator.learn.samples`), so a window far larger than memory is never held whole.

`fit` is the loop both trainers use. It draws minibatches from a `BlockLoader`, which holds at
most `max_samples_in_memory` rows at once: a dataset that fits sits on the device before the first
step and a batch is one `index_select` per tensor from a per-epoch permutation (its samples/s is
compared with a bare PyTorch loop over the same tensors); a larger one is read a block at a time.
The loss is read back to the host (a device sync) only when progress is reported.

Nothing here writes files but the caller's sample cache: what survives a failure is what the
caller saved (see `orchestrator.nn.checkpoint`), the finished network and the training state `fit`
hands to its `save` now and then, from which a restarted run goes on. `scan_window` records exactly which files, by
sha256, the data came from, for the model's lineage, and keeps only a small index of their games;
`read_window` reads the chosen games again, one at a time.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from orchestrator.learn.model_records import DataFile
from orchestrator.learn.samples import BlockLoader, Column, SampleWriter
from orchestrator.play.games import BUILTIN, GameCatalog
from orchestrator.play.records import ReadStats, read_games

Report = Callable[[dict[str, Any]], bool]
SaveState = Callable[[dict[str, Any]], None]
LossFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class TrainingDiverged(RuntimeError):
    """The loss went to NaN or infinity; the weights are not worth saving."""


# -- configuration -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """`steps` wins over `epochs`; with neither, one epoch. The last partial batch of an epoch is
    dropped (a fresh permutation starts the next), unless the data is smaller than one batch."""

    batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adam"  # or "sgd" (momentum 0.9, nesterov)
    weight_decay: float = 0.0
    steps: int | None = None
    epochs: float | None = None
    seed: int = 0
    device: str = "cpu"
    report_every: int = 50
    max_samples_in_memory: int = 1_000_000  # rows held at once; a larger dataset streams from its cache
    checkpoint_interval_s: float = 60.0  # `fit` hands its state to `save` at a report this long after the last

    def __post_init__(self) -> None:
        for name in ("batch_size", "report_every", "max_samples_in_memory"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError("steps: must be null or a positive integer")
        if self.epochs is not None and not (isinstance(self.epochs, (int, float)) and math.isfinite(self.epochs)
                                            and self.epochs > 0):
            raise ValueError("epochs: must be null or a positive number")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError("lr: must be a positive number")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ValueError("weight_decay: must be a non-negative number")
        if not (isinstance(self.checkpoint_interval_s, (int, float)) and math.isfinite(self.checkpoint_interval_s)
                and self.checkpoint_interval_s >= 0):
            raise ValueError("checkpoint_interval_s: must be a non-negative number")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError("optimizer: must be adam or sgd")

    def total_steps(self, samples: int) -> int:
        if self.steps is not None:
            return self.steps
        per_epoch = max(1, samples // self.batch_size)
        return max(1, math.ceil(per_epoch * (self.epochs if self.epochs is not None else 1.0)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: not a training config field; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


@dataclass(frozen=True)
class PolicyValueConfig(TrainConfig):
    value_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.value_weight, (int, float)) and math.isfinite(self.value_weight)
                and self.value_weight >= 0):
            raise ValueError("value_weight: must be a non-negative number")


# -- the loop ----------------------------------------------------------------------------------

def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def loader_for(columns: Sequence[np.ndarray], config: TrainConfig) -> BlockLoader:
    """The minibatches `fit` trains on: columns of one row per sample (arrays or memory-mapped)."""
    return BlockLoader(columns, config.batch_size, config.max_samples_in_memory, config.device, config.seed)


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                   first: Mapping[str, float]) -> dict[str, Any]:
    """What `fit` needs to go on from `step` exactly as if it had never stopped (with the same loader
    seed): the weights, the optimizer's moments, the step and the first reported losses, on the host."""
    def host(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().clone()
        if isinstance(value, dict):
            return {k: host(v) for k, v in value.items()}
        if isinstance(value, list):
            return [host(v) for v in value]
        return value
    return {"step": step, "model": host(model.state_dict()), "optimizer": host(optimizer.state_dict()),
            "first": dict(first)}


def fit(model: torch.nn.Module, loader: BlockLoader, loss_fn: LossFn, loss_names: Sequence[str],
        config: TrainConfig, report: Report | None = None, *, resume: Mapping[str, Any] | None = None,
        save: SaveState | None = None) -> dict[str, Any]:
    """Minimise `loss_fn(*batch) -> (loss, parts)` over the loader's minibatches. `parts` is a
    detached 1-d tensor, one entry per name in `loss_names`, averaged over each reporting window.
    Stops early when `report` returns True; raises TrainingDiverged when a window's loss is not
    finite.

    `save(state)` gets a `training_state` at a report once `checkpoint_interval_s` passed since the
    last one, and at a stop; given such a state as `resume`, the run continues from its step with
    its weights and optimizer, over the batches a run never stopped would have drawn next."""
    samples, batch = loader.samples, loader.batch
    total = config.total_steps(samples)
    optimizer = make_optimizer(model, config)
    step = 0
    first: dict[str, float] = {}
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        step, first = int(resume["step"]), dict(resume["first"])
    resumed_from = step
    model.train()
    batches = loader.batches(skip=step)
    window = torch.zeros(len(loss_names), device=config.device)
    window_steps = 0
    final: dict[str, float] = {}
    started = last = saved = time.perf_counter()
    stopped = False
    while step < total:
        loss, parts = loss_fn(*next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window += parts
        window_steps += 1
        step += 1
        if step % config.report_every == 0 or step == total:
            values = (window / window_steps).tolist()  # the only device sync
            if not all(math.isfinite(v) for v in values):
                raise TrainingDiverged(f"loss became non-finite by step {step}: {dict(zip(loss_names, values))}; "
                                       f"lower lr (now {config.lr})")
            now = time.perf_counter()
            rate = (step - resumed_from) * batch / (now - started) if now > started else 0.0
            progress = {"step": step, "steps": total, **dict(zip(loss_names, values)),
                        "samples_per_s": rate, "window_samples_per_s": window_steps * batch / max(now - last, 1e-9),
                        "eta_s": (total - step) * batch / rate if rate else None}
            final = dict(zip(loss_names, values))
            first = first or final
            window.zero_()
            window_steps, last = 0, now
            stopping = report is not None and report(progress) and step < total
            if save is not None and step < total and (stopping or now - saved >= config.checkpoint_interval_s):
                save(training_state(model, optimizer, step, first))
                saved = time.perf_counter()
            if stopping:
                stopped = True
                break
    elapsed = time.perf_counter() - started
    model.eval()
    trained = step - resumed_from
    return {
        "steps": step,
        "resumed_from_step": resumed_from,
        "samples_seen": step * batch,
        "dataset_samples": samples,
        "batch_size": batch,
        "max_samples_in_memory": loader.cap,
        "peak_samples_in_memory": loader.peak_resident,
        "elapsed_s": elapsed,
        "samples_per_s": trained * batch / elapsed if elapsed > 0 else 0.0,
        "stopped": stopped,
        **{f"initial_{name}": value for name, value in first.items()},
        **{f"final_{name}": value for name, value in final.items()},
    }


# -- replaying records -------------------------------------------------------------------------

class _Unreplayable(Exception):
    """A record that cannot be used; the message is the skip reason's key."""


def outcome_vector(returns: Sequence[float]) -> list[float]:
    """Per seat: 1 if its return beats every other seat's, -1 if some seat beats it, else 0 (the
    scale of the tanh value heads and of the searches' terminal values). A one-player game has no
    one to beat: its return, clipped into [-1, 1]."""
    values = [float(r) for r in returns]
    if len(values) == 1:
        return [min(1.0, max(-1.0, values[0]))]
    out = []
    for seat, mine in enumerate(values):
        best_other = max(r for s, r in enumerate(values) if s != seat)
        out.append(1.0 if mine > best_other else -1.0 if mine < best_other else 0.0)
    return out


def _policy(raw: Any, legal: Sequence[int]) -> dict[int, float] | None:
    if not raw:
        return None
    try:
        policy = {int(action): float(p) for action, p in raw.items()}
    except (AttributeError, TypeError, ValueError):
        raise _Unreplayable("bad_policy") from None
    if not set(policy) <= set(legal) or any(not math.isfinite(p) or p < 0 for p in policy.values()):
        raise _Unreplayable("bad_policy")
    total = sum(policy.values())
    if total <= 0:
        raise _Unreplayable("bad_policy")
    return {action: p / total for action, p in policy.items()}


@dataclass(frozen=True)
class ReplayedGame:
    """One game that replayed cleanly: observations [m, F] of the mover before each move, movers
    [m], the outcome vector (see `outcome_vector`) and each position's distribution or None."""

    game_id: str
    observations: np.ndarray
    movers: np.ndarray
    outcome: np.ndarray
    policies: list[dict[int, float] | None]


def _replay_one(game: Any, board_type: str, record: Mapping[str, Any], width: int) -> ReplayedGame:
    players = game.num_players()
    if record.get("board_type") != board_type:
        raise _Unreplayable("other_board_type")
    outcome = record.get("outcome")
    if not isinstance(outcome, list) or len(outcome) != players \
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in outcome):
        raise _Unreplayable("bad_outcome")
    moves = record.get("moves")
    if not isinstance(moves, list):
        raise _Unreplayable("bad_record")
    raw_policies = record.get("policies") or [None] * len(moves)
    if not isinstance(raw_policies, list) or len(raw_policies) != len(moves):
        raise _Unreplayable("bad_record")
    observations = np.empty((len(moves), width), dtype=np.float32)
    movers = np.empty(len(moves), dtype=np.int64)
    policies: list[dict[int, float] | None] = []
    state = game.new_initial_state()
    for n, (move, raw) in enumerate(zip(moves, raw_policies)):
        if state.is_terminal():
            raise _Unreplayable("moves_after_end")
        legal = state.legal_actions()
        if move not in legal:
            raise _Unreplayable("illegal_move")
        mover = state.current_player()
        observations[n] = state.observation_tensor(mover)
        movers[n] = mover
        policies.append(_policy(raw, legal))
        state.apply_action(move)
    if state.is_terminal():
        if not np.allclose(state.returns(), outcome, atol=1e-6):
            raise _Unreplayable("outcome_mismatch")
    elif record.get("termination") != "max_length":
        raise _Unreplayable("unfinished")
    return ReplayedGame(record["game_id"], observations, movers,
                        np.asarray(outcome_vector(outcome), dtype=np.float32), policies)


def replay_games(board_type: str, records: Iterable[Mapping[str, Any]], skipped: dict[str, int], *,
                 games: GameCatalog = BUILTIN) -> Iterator[ReplayedGame]:
    """Replay `records` (as `orchestrator.play.records.read_games` yields them) with OpenSpiel, one
    game at a time, so only one game's positions are in memory here.

    A game is used whole or not at all: another board type, a repeated game_id, an illegal move,
    a distribution over illegal actions, or a recorded outcome that the replayed final position
    contradicts skips it, counted by reason in `skipped`. The outcome of a game cut at the move
    limit is the recorded one (the replay has none)."""
    game = games.load(board_type)
    width = int(np.prod(game.observation_tensor_shape()))
    seen: set[str] = set()
    for record in records:
        try:
            if record.get("game_id") in seen:
                raise _Unreplayable("duplicate")
            replayed = _replay_one(game, board_type, record, width)
        except _Unreplayable as why:
            skipped[str(why)] = skipped.get(str(why), 0) + 1
            continue
        seen.add(replayed.game_id)
        yield replayed


# -- the policy/value dataset ------------------------------------------------------------------

@dataclass(frozen=True)
class PolicyValueDataset:
    """observations [N, *observation_shape], policies [N, num_actions] (rows sum to 1), values
    [N, 1] for the player to move in two-player games, else [N, players] in seat order: float32
    arrays, memory-mapped when the dataset was built into a cache directory."""

    observations: np.ndarray
    policies: np.ndarray
    values: np.ndarray
    game_ids: tuple[str, ...]
    skipped: dict[str, int]
    positions_without_policy: int

    def __len__(self) -> int:
        return int(self.observations.shape[0])


def moves_in(records: Iterable[Mapping[str, Any]]) -> int:
    """Positions the records could give at most: the room a dataset built from them needs."""
    return sum(len(r["moves"]) for r in records if isinstance(r.get("moves"), list))


def build_dataset(board_type: str, records: Iterable[Mapping[str, Any]], *, games: GameCatalog = BUILTIN,
                  cache_dir: Path | None = None, capacity: int | None = None) -> PolicyValueDataset:
    """Training rows from self-play records; positions whose record has no distribution are left
    out (their move carries no search target), games that do not replay are skipped whole.

    With `cache_dir`, the rows go to memory-mapped files there as each game is replayed, and
    `records` may be a stream read once (`read_window`); `capacity` (at least the records' moves,
    see `moves_in`) is then required. Without, the records are gathered to size the arrays."""
    if capacity is None:
        if cache_dir is not None:
            raise ValueError("capacity: a dataset streamed to a cache needs its room given up front")
        records = list(records)
        capacity = moves_in(records)
    game = games.load(board_type)
    shape, actions, players = tuple(game.observation_tensor_shape()), game.num_distinct_actions(), game.num_players()
    value_width = 1 if players == 2 else players
    writer = SampleWriter((Column("observations", shape), Column("policies", (actions,)),
                           Column("values", (value_width,))), capacity, cache_dir)
    skipped: dict[str, int] = {}
    game_ids: list[str] = []
    without_policy = 0
    for replayed in replay_games(board_type, records, skipped, games=games):
        game_ids.append(replayed.game_id)
        keep = [i for i, policy in enumerate(replayed.policies) if policy is not None]
        without_policy += len(replayed.policies) - len(keep)
        policies = np.zeros((len(keep), actions), dtype=np.float32)
        for row, i in enumerate(keep):
            policies[row, list(replayed.policies[i])] = list(replayed.policies[i].values())
        movers = replayed.movers[keep]
        values = replayed.outcome[movers][:, None] if players == 2 else np.tile(replayed.outcome, (len(keep), 1))
        writer.append(replayed.observations[keep].reshape(len(keep), *shape), policies, values)
    observations, policies, values = writer.finish()
    return PolicyValueDataset(observations, policies, values, tuple(game_ids), skipped, without_policy)


def policy_value_loss(model: torch.nn.Module, value_weight: float) -> LossFn:
    """Cross-entropy against the visit distribution plus value_weight * MSE against the outcome."""
    def loss_fn(obs: torch.Tensor, target_pi: torch.Tensor, target_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, values = model(obs)
        policy_loss = -(target_pi * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
        value_loss = F.mse_loss(values, target_v)
        loss = policy_loss + value_weight * value_loss
        return loss, torch.stack((loss.detach(), policy_loss.detach(), value_loss.detach()))
    return loss_fn


def train_policy_value(model: torch.nn.Module, dataset: PolicyValueDataset, config: PolicyValueConfig,
                       report: Report | None = None, *, resume: Mapping[str, Any] | None = None,
                       save: SaveState | None = None) -> dict[str, Any]:
    """Train `model` (a `PolicyValueNet`, or anything with forward(obs) -> (logits, values)) in place.

    `report(progress)` receives step, steps, loss, policy_loss, value_loss, samples_per_s and
    eta_s every `report_every` steps and at the end; returning True stops after that step.
    Returns metrics: steps, samples seen, samples/s, initial and final losses, whether stopped.
    `resume` and `save`: see `fit`."""
    if len(dataset) == 0:
        raise ValueError("dataset: no positions with a search distribution to train on")
    torch.manual_seed(config.seed)
    model.to(config.device)
    return fit(model, loader_for((dataset.observations, dataset.policies, dataset.values), config),
               policy_value_loss(model, config.value_weight), ("loss", "policy_loss", "value_loss"), config, report,
               resume=resume, save=save)


# -- lineage -----------------------------------------------------------------------------------

def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class IndexedGame:
    """What choosing a window needs of a game, without the game: a few dozen bytes each."""

    game_id: str
    finished_at: str  # ISO 8601 UTC, as the records carry it: sorts as it reads
    moves: int


@dataclass(frozen=True)
class WindowScan:
    """The games in a set of files (first copy of each game_id, in file order), each file's sha256,
    and the read counters (torn lines, invalid records, duplicates)."""

    games: list[IndexedGame]
    files: tuple[DataFile, ...]
    paths: tuple[Path, ...]  # the files that were read, absolute, in read order
    stats: ReadStats


def scan_window(data_dir: str | Path, paths: Iterable[str | Path]) -> WindowScan:
    """Index game files for training and describe exactly what was read, for the model's lineage.

    `paths` are relative to `data_dir` (or absolute inside it). Every file that was read is listed
    with the sha256 of its bytes, whether or not it held valid games; a file that vanished before
    it could be read (a cleanup raced us) is left out. Game files are written once by rename and
    never appended, so the hash, this read and a later `read_window` see the same bytes. Only the
    index of each game is kept, never the records."""
    root = Path(data_dir).resolve()
    stats = ReadStats()
    seen: set[str] = set()
    games: list[IndexedGame] = []
    files: list[DataFile] = []
    read: list[Path] = []
    resolved: dict[Path, str] = {}
    for raw in paths:
        path = (root / raw).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"paths: {str(raw)!r} is outside the data directory")
        resolved.setdefault(path, path.relative_to(root).as_posix())
    for path, relative in resolved.items():
        try:
            sha256 = _sha256_file(path)
            games.extend(IndexedGame(r["game_id"], r["finished_at"], len(r["moves"]))
                         for r in read_games([path], stats, seen))
        except FileNotFoundError:
            continue
        files.append(DataFile(path=relative, sha256=sha256))
        read.append(path)
    return WindowScan(games, tuple(files), tuple(read), stats)


def read_window(paths: Sequence[Path], game_ids: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The records of `game_ids` in the scanned files, read again one at a time, in file order. The
    same first-copy-wins de-duplication as the scan picks the same record for each game_id."""
    wanted = set(game_ids)
    seen: set[str] = set()
    for path in paths:
        try:
            yield from (record for record in read_games([path], None, seen) if record["game_id"] in wanted)
        except FileNotFoundError:  # removed since the scan: its games are simply not trained on
            continue
