"""A small NNUE-style value network, its `StateEvaluator`, and its training.

The network reads the OpenSpiel observation tensor of the player to move, flattened, through one
wide layer, then narrow clipped-ReLU layers (activations clamped to [0, 1], as NNUE's quantised
accumulators are), and ends in tanh: the value of the position for the player to move. It is
meant for `minimax_<d>` in two-player zero-sum games, where the opponent's value is the negation.

Training replays self-play records (`positions_from_records`) into (observation, outcome for the
player to move) pairs, in memory or, given a cache directory, into memory-mapped files one game at
a time, and fits them by MSE with Adam through the same bounded-memory loader as the policy/value
trainer. Nothing here writes files except
`save_nnue`, which writes the policy/value checkpoint's format (`orchestrator.nn.checkpoint`,
tagged `nnue`) through its atomic write and sha256 sidecar, so a crash leaves the previous
checkpoint or the whole new one; `load_nnue` refuses a file whose digest does not match.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pyspiel
import torch
from torch import nn

from orchestrator.learn.samples import Column, SampleWriter
from orchestrator.learn.training import SaveState, TrainConfig, fit, loader_for, moves_in, replay_games
from orchestrator.nn.checkpoint import read_network, save_network
from orchestrator.play.features import terminal_value
from orchestrator.play.games import BUILTIN, GameCatalog

ARCHITECTURE = "nnue"


@dataclass(frozen=True)
class NNUEConfig:
    input_size: int
    hidden: tuple[int, ...] = (256, 32, 32)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.input_size < 1 or not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"invalid NNUE config {self}: input_size and every hidden width must be >= 1")

    @classmethod
    def for_game(cls, board_type: str, hidden: Sequence[int] = (256, 32, 32), *,
                 games: GameCatalog = BUILTIN) -> NNUEConfig:
        game = games.load(board_type)
        return cls(input_size=int(np.prod(game.observation_tensor_shape())), hidden=tuple(hidden))

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NNUEConfig:
        return cls(input_size=int(data["input_size"]), hidden=tuple(data["hidden"]))


class NNUENet(nn.Module):
    """forward(features [B, input_size]) -> values [B] in (-1, 1), for the player to move."""

    def __init__(self, config: NNUEConfig) -> None:
        super().__init__()
        self.config = config
        widths = (config.input_size, *config.hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.out = nn.Linear(widths[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        for layer in self.layers:
            x = torch.clamp(layer(x), 0.0, 1.0)
        return torch.tanh(self.out(x)).squeeze(-1)


class NNUEEvaluator:
    """`StateEvaluator` over an `NNUENet`: all non-terminal states go through one forward pass;
    terminal states get their exact outcome (win 1, draw 0, loss -1)."""

    def __init__(self, model: NNUENet, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.device = device

    def evaluate_many(self, states: Sequence[pyspiel.State], player: int) -> np.ndarray:
        values = np.empty(len(states), dtype=np.float64)
        open_idx: list[int] = []
        rows: list[list[float]] = []
        sign: list[float] = []
        for i, state in enumerate(states):
            if state.is_terminal():
                values[i] = terminal_value(state, player)
                continue
            if state.num_players() != 2:
                raise ValueError("the NNUE evaluator values positions for the side to move; it needs a two-player game")
            mover = state.current_player()
            open_idx.append(i)
            rows.append(state.observation_tensor(mover))
            sign.append(1.0 if mover == player else -1.0)
        if rows:
            batch = torch.from_numpy(np.asarray(rows, dtype=np.float32)).to(self.device)
            with torch.inference_mode():
                out = self.model(batch).float().cpu().numpy()
            values[open_idx] = out * np.asarray(sign)
        return values


@dataclass(frozen=True)
class NNUESamples:
    """Flattened observations of the player to move [N, F] and that player's final outcome [N]
    (float32 arrays, memory-mapped when built into a cache directory), and the games they came from."""

    observations: np.ndarray
    targets: np.ndarray
    game_ids: tuple[str, ...]
    skipped: dict[str, int]

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def games(self) -> int:
        return len(self.game_ids)

    @property
    def skipped_games(self) -> int:
        return sum(self.skipped.values())


def positions_from_records(board_type: str, records: Iterable[Any], *, games: GameCatalog = BUILTIN,
                           cache_dir: Path | None = None, capacity: int | None = None) -> NNUESamples:
    """Every position before a move in the records, as (observation, outcome for its mover).

    Games that do not replay (another board type, an illegal move, an outcome the replay
    contradicts) are skipped and counted, never half-used. With `cache_dir` the samples are
    memory-mapped files there, written as each game is replayed, and `capacity` (at least the
    records' moves) is required, as for `orchestrator.learn.training.build_dataset`.
    """
    if capacity is None:
        if cache_dir is not None:
            raise ValueError("capacity: samples streamed to a cache need their room given up front")
        records = list(records)
        capacity = moves_in(records)
    width = int(np.prod(games.load(board_type).observation_tensor_shape()))
    writer = SampleWriter((Column("observations", (width,)), Column("targets", ())), capacity, cache_dir)
    skipped: dict[str, int] = {}
    game_ids = []
    for replayed in replay_games(board_type, records, skipped, games=games):
        game_ids.append(replayed.game_id)
        writer.append(replayed.observations, replayed.outcome[replayed.movers])
    observations, targets = writer.finish()
    return NNUESamples(observations=observations, targets=targets, game_ids=tuple(game_ids),
                       skipped=skipped)


@dataclass(frozen=True)
class NNUETrainConfig(TrainConfig):
    hidden: tuple[int, ...] = (256, 32, 32)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))


def train_nnue(
    samples: NNUESamples,
    config: NNUETrainConfig,
    report: Callable[[dict[str, Any]], bool] | None = None,
    model: NNUENet | None = None,
    *,
    resume: Mapping[str, Any] | None = None,
    save: SaveState | None = None,
) -> tuple[NNUENet, dict[str, Any]]:
    """Fit a new NNUE (or continue `model`) to `samples` by MSE with Adam.

    `report(progress)` gets step, steps, loss, samples_per_s and eta_s every `report_every`
    steps and at the end; a True answer stops training after that step. `resume` and `save`: see
    `orchestrator.learn.training.fit`.
    """
    if len(samples) == 0:
        raise ValueError("samples: no positions to train on")
    torch.manual_seed(config.seed)
    if model is None:
        model = NNUENet(NNUEConfig(input_size=samples.observations.shape[1], hidden=config.hidden))
    model.to(config.device)

    def loss_fn(batch_x: torch.Tensor, batch_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = torch.mean((model(batch_x) - batch_z) ** 2)
        return loss, loss.detach().reshape(1)

    metrics = fit(model, loader_for((samples.observations, samples.targets), config), loss_fn, ("loss",), config,
                  report, resume=resume, save=save)
    model.eval()
    return model, metrics


def save_nnue(path: str | os.PathLike[str], model: NNUENet, *, code_version: str, parent: str | None = None,
              data_window: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> str:
    """Write the network with its lineage atomically (checkpoint module's writer); returns its sha256."""
    return save_network(path, model, ARCHITECTURE, code_version=code_version, parent=parent,
                        data_window=data_window, extra=extra)


def load_nnue(path: str | os.PathLike[str], expected_sha256: str | None = None,
              device: str = "cpu") -> tuple[NNUENet, dict[str, Any]]:
    """Verified load: (model in eval mode on `device`, metadata). Raises CheckpointError."""
    payload, _ = read_network(path, ARCHITECTURE, expected_sha256)
    model = NNUENet(NNUEConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload["metadata"]
