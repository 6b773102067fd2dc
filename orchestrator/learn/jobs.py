"""The `training` and `nnue_training` job types: train on this node's newest self-play games,
write a verified checkpoint, and register it as a `candidate` with its exact lineage.

A run reads the newest `window_games` games of its board type from
`<data_dir>/selfplay/<board_type>/*/*.jsonl` (files newest first, games deduplicated by game_id,
torn lines and duplicates skipped and counted), trains, writes `<data_dir>/models/<model_id>.pt`
(or `.nnue`) atomically with its sha256, and returns the `ModelRecord`: its data window names
exactly the files read (with their sha256) and the games trained on (count and id digest).
Memory stays bounded however large the window: choosing it keeps a small index per game, the
chosen games are replayed one at a time into memory-mapped sample files under
`<data_dir>/cache/training/<job_id>/` (removed when the job ends, and by its next attempt after a
crash), and training holds at most `max_samples_in_memory` samples at once.

What survives a restart: every `checkpoint_interval_s` (at a progress report), and when asked to
stop, the job saves its training state (weights, optimizer, step, and the files and games of its
window) atomically under `<data_dir>/cache/resume/`. A later attempt of the same job (its task
died, its node restarted, or a code update suspended it) reads the same window again and goes on
from that step, over the same batches a run never interrupted would have drawn, and its result
says from which step (`resumed_from_step`); a state it cannot trust or use is set aside with a
`resume_note` and the run starts over.

Every finished job reads its checkpoint back against the sha256 it wrote (`checkpoint_verified`)
and ends with the model's record as its result, which its JobSupervisor keeps durably. A run
started with `POST /training/start` carries no epoch: the registrar
(`orchestrator.learn.registration`) registers its verified result through whichever leader is
current, so a leadership change during training loses nothing. A job whose config carries a
commissioning leader's `epoch` and `leader_id` (as the improvement pipeline starts them) registers
itself, fenced: the cluster store accepts the write only while that leadership is the newest, and
a refusal is in the result. A run stopped on request saves and registers nothing.

Progress (phase, step, losses, samples/s, ETA) goes through `ctx.report`; each training report
also carries `metrics`, which the JobSupervisor appends to the job's metric series.
"""
from __future__ import annotations

import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from orchestrator import __version__
from orchestrator.cluster.job_types import JobContext, JobType
from orchestrator.errors import Conflict
from orchestrator.learn.model_records import DataWindow, ModelRecord, game_ids_digest
from orchestrator.learn.nnue import NNUENet, NNUETrainConfig, load_nnue, positions_from_records, save_nnue, train_nnue
from orchestrator.learn.training import (PolicyValueConfig, build_dataset, read_window, scan_window,
                                         train_policy_value)
from orchestrator.nn.checkpoint import (CheckpointError, load_checkpoint, load_training_state, model_path,
                                        remove_training_state, save_checkpoint, save_training_state)
from orchestrator.nn.resnet import PolicyValueNet, ResNetConfig
from orchestrator.play.games import DEFAULT_BOARD_TYPE, catalog_in
from orchestrator.play.records import game_files
from orchestrator.play.selfplay import job_directory

MODEL_ID = r"^[A-Za-z0-9._-]{1,128}$"
NODE_ID = r"^[A-Za-z0-9._-]{1,64}$"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
CACHE_DIR = "cache/training"  # under the data directory; not one of the synced trees
RESUME_DIR = "cache/resume"  # likewise; one training state per job, kept across its attempts
RESUME_SUFFIX = ".resume"  # /cleanup removes one as old as a stale partial download


class TrainingJobConfig(BaseModel):
    """What both trainers take. `steps` or `epochs` (not both; neither = one epoch over the window)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    board_type: str = DEFAULT_BOARD_TYPE
    steps: int | None = Field(None, ge=1, le=10_000_000)
    epochs: float | None = Field(None, gt=0, le=10_000, allow_inf_nan=False)
    batch_size: int = Field(256, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=10, allow_inf_nan=False)
    window_games: int = Field(10_000, ge=1, le=10_000_000, description="train on this many newest games")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    report_every: int = Field(50, ge=1, le=1_000_000, description="report progress every this many steps")
    checkpoint_interval_s: float = Field(60.0, ge=0, le=86_400, allow_inf_nan=False,
                                         description="save the training state this often (at a progress report), "
                                                     "so a restarted attempt goes on from there")
    max_samples_in_memory: int = Field(1_000_000, ge=1, le=1_000_000_000,
                                       description="training samples held at once; a larger window streams from a "
                                                   "memory-mapped cache on disk")
    parent: str | None = Field(None, pattern=MODEL_ID, description="start from this registered model's weights")
    model_id: str | None = Field(None, pattern=MODEL_ID, description="default: derived from the job id")
    epoch: int | None = Field(None, ge=1, le=2**63 - 1,
                              description="a commissioning leader's epoch: the job registers its model itself, fenced")
    leader_id: str | None = Field(None, pattern=NODE_ID)

    @field_validator("board_type")
    @classmethod
    def _known_game(cls, value: str, info: ValidationInfo) -> str:
        catalog_in(info.context).spec(value)  # UnknownGame (a ValueError) lists the known names
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TrainingJobConfig":
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        if self.max_samples_in_memory < self.batch_size:
            raise ValueError("max_samples_in_memory must hold at least one batch (batch_size)")
        if (self.epoch is None) != (self.leader_id is None):
            raise ValueError("epoch and leader_id come together (the leader that commissioned the run)")
        return self

    def train_fields(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "lr": self.lr, "steps": self.steps, "epochs": self.epochs,
                "seed": self.seed, "report_every": self.report_every,
                "max_samples_in_memory": self.max_samples_in_memory,
                "checkpoint_interval_s": self.checkpoint_interval_s}


class PolicyValueJobConfig(TrainingJobConfig):
    value_weight: float = Field(1.0, ge=0, le=100, allow_inf_nan=False)
    blocks: int | None = Field(None, ge=0, le=40, description="residual blocks; default sized for the board")
    channels: int | None = Field(None, ge=1, le=512)


class NNUEJobConfig(TrainingJobConfig):
    hidden: tuple[int, ...] = Field((256, 32, 32), min_length=1, max_length=8)

    @field_validator("hidden")
    @classmethod
    def _widths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(width < 1 or width > 4096 for width in value):
            raise ValueError("every hidden width must be between 1 and 4096")
        return value


# -- the data window ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """The newest games chosen for a run, and exactly where they came from. The records stay on
    disk: `records()` reads them again, one at a time, so choosing a window of millions of games
    costs a small index per game, never the games."""

    paths: tuple[Path, ...]  # the files read, in read order
    game_ids: tuple[str, ...]  # the games chosen, newest first
    positions: int  # moves in the chosen games: the most samples they can give
    data_window: DataWindow  # files read (sha256); game count and digest of `game_ids`
    skipped: dict[str, int]  # torn lines, invalid records, duplicate game_ids in the files read

    def records(self) -> Iterator[dict[str, Any]]:
        return read_window(self.paths, self.game_ids)


def _newest_first(data_dir: Path, board_type: str) -> list[Path]:
    board_dir = job_directory(data_dir, board_type, "_").parent
    if not board_dir.is_dir():
        return []
    files = [path for job_dir in board_dir.iterdir() if job_dir.is_dir() for path in game_files(job_dir)]

    def mtime(path: Path) -> int:
        try:
            return path.stat().st_mtime_ns
        except FileNotFoundError:  # removed by a cleanup since the listing; scan_window skips it
            return 0
    return sorted(files, key=lambda p: (mtime(p), p.as_posix()), reverse=True)


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def newest_games(data_dir: str | Path, board_type: str, window_games: int,
                 only: Sequence[str] | None = None) -> Window:
    """The newest `window_games` games of `board_type` in this data directory.

    Files are taken newest first until their lines cover the window; if torn lines or duplicates
    leave it short, older files are added and the window is read again. Of the games read, the
    newest by `finished_at` are kept. `only` (paths relative to the data directory): read exactly
    those files, as an earlier attempt of the run did, for the window it trained on."""
    root = Path(data_dir)
    files = _newest_first(root, board_type)
    if only is not None:
        wanted = set(only)
        files = [path for path in files if path.relative_to(root).as_posix() in wanted]
    chosen: list[Path] = [] if only is None else list(files)
    lines = 0
    while True:
        while lines < window_games and len(chosen) < len(files):
            path = files[len(chosen)]
            chosen.append(path)
            lines += _lines(path)
        scan = scan_window(root, chosen)
        if len(scan.games) >= window_games or len(chosen) == len(files):
            break
        lines = len(scan.games)  # read further back for the games the skipped lines did not give
    kept = sorted(scan.games, key=lambda g: (g.finished_at, g.game_id), reverse=True)[:window_games]
    ids = tuple(g.game_id for g in kept)
    data_window = DataWindow(files=scan.files, game_count=len(kept), game_ids_digest=game_ids_digest(ids))
    stats = scan.stats
    return Window(scan.paths, ids, sum(g.moves for g in kept), data_window,
                  {"torn": stats.torn, "invalid": stats.invalid, "duplicates": stats.duplicates})


def _cache_dir(ctx: JobContext) -> Path:
    """The job's scratch space for its samples (outside the synced trees); one per job, any attempt."""
    return Path(ctx.data_dir) / CACHE_DIR / _UNSAFE.sub("_", ctx.job_id)[:128]


# -- running a job -----------------------------------------------------------------------------

def _model_id(config: TrainingJobConfig, ctx: JobContext) -> str:
    return config.model_id or _UNSAFE.sub("_", ctx.job_id)[:128]


def _reporter(ctx: JobContext, loss_names: tuple[str, ...], base: dict[str, Any]) -> Callable[[dict], bool]:
    def report(progress: dict[str, Any]) -> bool:
        metrics = {name: progress[name] for name in (*loss_names, "samples_per_s") if progress.get(name) is not None}
        return bool(ctx.report({"phase": "training", **base, **progress, "metrics": metrics}))
    return report


def _load_parent(ctx: JobContext, parent: str, kind: type) -> Any:
    loader = getattr(ctx, "load_model", None)
    if loader is None:
        raise ValueError(f"parent: this job context cannot load registered models (asked for {parent!r})")
    loaded = loader(parent)
    model = getattr(loaded, "model", loaded)
    if not isinstance(model, kind):
        raise ValueError(f"parent: model {parent!r} is not a {kind.__name__}")
    return model


def _register(ctx: JobContext, record: ModelRecord, config: TrainingJobConfig) -> dict[str, Any]:
    if config.epoch is None:
        return {"registered": False, "registration": "pending: no leader epoch in the config, so the job does not "
                                                     "register itself; the registrar registers a training run's "
                                                     "verified model through the current leader"}
    register = getattr(ctx, "register_model", None)
    if register is None:
        return {"registered": False, "registration": "not registered: this job context has no model registry"}
    try:
        register(record.to_dict(), config.epoch, config.leader_id)
    except Conflict as refused:
        return {"registered": False, "registration": f"registration refused: {refused.message}"}
    return {"registered": True, "registration": f"registered under epoch {config.epoch} of {config.leader_id}"}


def _skipped_note(skipped: dict[str, int], replay_skipped: dict[str, int]) -> str | None:
    parts = [f"{count} {what}" for what, count in (("torn lines", skipped["torn"]),
                                                    ("invalid records", skipped["invalid"]),
                                                    ("duplicate games", skipped["duplicates"])) if count]
    parts += [f"{count} games that did not replay ({why})" for why, count in sorted(replay_skipped.items())]
    return "skipped " + ", ".join(parts) if parts else None


def _finish(ctx: JobContext, config: TrainingJobConfig, kind: str, model_id: str, path: Path, sha256: str,
            window: Window, trained_ids: list[str], metrics: dict[str, Any], replay_skipped: dict[str, int]
            ) -> dict[str, Any]:
    lineage = DataWindow(files=window.data_window.files, game_count=len(trained_ids),
                         game_ids_digest=game_ids_digest(trained_ids))
    record = ModelRecord(
        model_id=model_id, board_type=config.board_type, kind=kind, parent=config.parent, created_at=time.time(),
        data_window=lineage, training_config=config.model_dump(mode="json"), metrics=metrics,
        code_version=__version__, path=path.relative_to(ctx.data_dir).as_posix(), sha256=sha256)
    ctx.report({"phase": "registering", "model_id": model_id})
    return {"model_id": model_id, "model": record.to_dict(), "checkpoint_verified": True,
            **_register(ctx, record, config),
            "games_read": len(window.game_ids), "games_trained": len(trained_ids),
            "skipped": {**window.skipped, "unreplayable": sum(replay_skipped.values())},
            "skipped_note": _skipped_note(window.skipped, replay_skipped), "stopped": False}


def _read(ctx: JobContext, config: TrainingJobConfig, only: Sequence[str] | None) -> Window:
    ctx.report({"phase": "reading", "board_type": config.board_type, "window_games": config.window_games})
    window = newest_games(ctx.data_dir, config.board_type, config.window_games, only)
    if not window.game_ids:
        where = job_directory(Path(ctx.data_dir), config.board_type, "_").parent
        raise ValueError(f"board_type: no self-play games for {config.board_type} under {where}")
    # The lineage names the node each file came from: files copied here from other nodes are in the
    # context's `data_origins` (relative path -> source node; a context without it copied nothing),
    # every other file was written by this node.
    origins = getattr(ctx, "data_origins", None) or {}
    files = tuple(replace(f, node_id=origins.get(f.path, ctx.node_id)) for f in window.data_window.files)
    return replace(window, data_window=replace(window.data_window, files=files))


def _stopped(window: Window, metrics: dict[str, Any], resume: "_Resume") -> dict[str, Any]:
    # A stop may be a restart's suspension, which resumes the job: its state stays for that attempt.
    return {"stopped": True, "registered": False,
            "registration": f"stopped on request at step {metrics['steps']}: no model saved; the training state "
                            f"stays for an attempt that resumes the job",
            "games_read": len(window.game_ids), "skipped": window.skipped, **resume.outcome(metrics)}


class _Resume:
    """A run's training state across attempts, at `<data_dir>/cache/resume/<job_id>.resume`: what an
    earlier attempt left (used only if it was saved by this same config, over a window this attempt
    can read again exactly), and where this attempt saves its own. Removed once the model is saved;
    a state left by a job that never finishes goes with `/cleanup` like a stale partial download."""

    def __init__(self, ctx: JobContext, config: TrainingJobConfig) -> None:
        self.path = Path(ctx.data_dir) / RESUME_DIR / f"{_UNSAFE.sub('_', ctx.job_id)[:128]}{RESUME_SUFFIX}"
        self.config = config.model_dump(mode="json")
        self.about: dict[str, Any] | None = None
        self.state: dict[str, Any] | None = None
        self.note: str | None = None
        try:
            loaded = load_training_state(self.path)
        except CheckpointError as exc:
            loaded, self.note = None, f"started over: the saved training state is unusable ({exc})"
        if loaded is not None and loaded[0].get("config") != self.config:
            loaded, self.note = None, "started over: the saved training state belongs to another config"
        if loaded is not None:
            self.about, self.state = loaded

    def window(self, ctx: JobContext, config: TrainingJobConfig) -> Window:
        """The saved state's window if it can be read again whole, else the newest games (and no state)."""
        if self.about is not None:
            try:
                window = _read(ctx, config, self.about["files"])
            except ValueError:
                window = None
            if window is not None and window.data_window.game_ids_digest == self.about["game_ids_digest"]:
                ctx.report({"phase": "resuming", "step": self.state["step"]})
                return window
            self.about, self.state = None, None
            self.note = "started over: the saved training state's games are no longer all here"
        return _read(ctx, config, None)

    def saver(self, window: Window) -> Callable[[dict[str, Any]], None]:
        about = {"config": self.config, "files": [f.path for f in window.data_window.files],
                 "game_ids_digest": window.data_window.game_ids_digest}
        return lambda state: save_training_state(self.path, state, about)

    def outcome(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"resumed_from_step": metrics.get("resumed_from_step", 0), "resume_note": self.note}

    def finished(self) -> None:
        remove_training_state(self.path)


def run_training(config: PolicyValueJobConfig, ctx: JobContext) -> dict[str, Any]:
    with _samples_cache(ctx) as cache:
        return _train_policy_value(config, ctx, cache)


def run_nnue_training(config: NNUEJobConfig, ctx: JobContext) -> dict[str, Any]:
    with _samples_cache(ctx) as cache:
        return _train_nnue(config, ctx, cache)


@contextmanager
def _samples_cache(ctx: JobContext) -> Iterator[Path]:
    """The job's sample cache, empty at the start (a crashed attempt may have left one) and gone at the end."""
    cache = _cache_dir(ctx)
    shutil.rmtree(cache, ignore_errors=True)
    try:
        yield cache
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _train_policy_value(config: PolicyValueJobConfig, ctx: JobContext, cache: Path) -> dict[str, Any]:
    resume = _Resume(ctx, config)
    window = resume.window(ctx, config)
    dataset = build_dataset(config.board_type, window.records(), games=ctx.games, cache_dir=cache,
                            capacity=window.positions)
    spec = ctx.games.spec(config.board_type)
    if config.parent:
        model = _load_parent(ctx, config.parent, PolicyValueNet)
        if (tuple(model.config.observation_shape), model.config.num_actions) != (spec.observation_shape, spec.num_actions):
            raise ValueError(f"parent: model {config.parent!r} was built for another game than {config.board_type}")
    else:
        torch.manual_seed(config.seed)  # fresh weights depend only on the seed
        model = PolicyValueNet(ResNetConfig.for_game(spec, config.blocks, config.channels))
    train = PolicyValueConfig(**config.train_fields(), value_weight=config.value_weight, device=ctx.device)
    base = {"games": len(dataset.game_ids), "positions": len(dataset)}
    metrics = train_policy_value(model, dataset, train, _reporter(ctx, ("loss", "policy_loss", "value_loss"), base),
                                 resume=resume.state, save=resume.saver(window))
    if metrics["stopped"]:
        return _stopped(window, metrics, resume)
    model_id = _model_id(config, ctx)
    path = model_path(ctx.data_dir, model_id)
    ctx.report({"phase": "saving", "model_id": model_id})
    sha256 = save_checkpoint(path, model, code_version=__version__, parent=config.parent,
                             data_window=window.data_window.to_dict(),
                             extra={"training_config": config.model_dump(mode="json")})
    load_checkpoint(path, sha256)  # verified: the bytes on disk decode to a network and match the record
    resume.finished()
    metrics.update(positions=len(dataset), positions_without_policy=dataset.positions_without_policy)
    return {**_finish(ctx, config, "policy_value", model_id, path, sha256, window, list(dataset.game_ids), metrics,
                      dataset.skipped), **resume.outcome(metrics)}


def _train_nnue(config: NNUEJobConfig, ctx: JobContext, cache: Path) -> dict[str, Any]:
    resume = _Resume(ctx, config)
    window = resume.window(ctx, config)
    samples = positions_from_records(config.board_type, window.records(), games=ctx.games, cache_dir=cache,
                                     capacity=window.positions)
    parent = _load_parent(ctx, config.parent, NNUENet) if config.parent else None
    train = NNUETrainConfig(**config.train_fields(), hidden=config.hidden, device=ctx.device)
    model, metrics = train_nnue(samples, train, _reporter(ctx, ("loss",), {"games": samples.games,
                                                                           "positions": len(samples)}), parent,
                               resume=resume.state, save=resume.saver(window))
    if metrics["stopped"]:
        return _stopped(window, metrics, resume)
    model_id = _model_id(config, ctx)
    path = model_path(ctx.data_dir, model_id).with_suffix(".nnue")
    ctx.report({"phase": "saving", "model_id": model_id})
    sha256 = save_nnue(path, model, code_version=__version__, parent=config.parent,
                       data_window=window.data_window.to_dict(),
                       extra={"training_config": config.model_dump(mode="json")})
    load_nnue(path, sha256)  # verified, as for the policy/value checkpoint
    resume.finished()
    metrics.update(positions=len(samples))
    return {**_finish(ctx, config, "nnue", model_id, path, sha256, window, list(samples.game_ids), metrics,
                      samples.skipped), **resume.outcome(metrics)}


TRAINING = JobType(name="training", config_model=PolicyValueJobConfig, run=run_training, wants_gpu=True)
NNUE_TRAINING = JobType(name="nnue_training", config_model=NNUEJobConfig, run=run_nnue_training, wants_gpu=True)
