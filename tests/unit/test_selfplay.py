"""The self-play job: record schema, atomic files, crash and torn-line recovery, graceful stop."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from actors.catalog import JOB_TYPES
from actors.selfplay_workers import run_selfplay_job
from orchestrator.nn.checkpoint import model_path, save_checkpoint
from orchestrator.nn.resnet import PolicyValueNet, ResNetConfig
from orchestrator.play.games import BUILTIN, GameCatalog
from orchestrator.play.records import CODE_VERSION, ReadStats, game_files, read_games, validate_record
from orchestrator.play.selfplay import SelfplayConfig, job_directory, run_selfplay


class Crash(RuntimeError):
    """Stands in for the task being killed right after a flush."""


@dataclass
class Context:
    """The JobContext protocol, for real: progress is kept, and stop/crash are decided by counts."""

    data_dir: Path
    job_id: str = "sp-job"
    node_id: str = "node-a"
    attempt: int = 1
    games: GameCatalog = BUILTIN
    device: str = "cpu"
    stop_after: int | None = None  # report() returns True from this report on
    crash_after: int | None = None  # report() raises after this many reports
    reports: list[dict[str, Any]] = field(default_factory=list)

    def report(self, progress: dict[str, Any]) -> bool:
        self.reports.append(progress)
        if self.crash_after is not None and len(self.reports) >= self.crash_after:
            raise Crash("killed")
        return self.stop_after is not None and len(self.reports) >= self.stop_after


def _config(**overrides) -> SelfplayConfig:
    values = {"board_type": "tic_tac_toe", "agent": "mcts_8", "num_games": 10, "parallel_games": 3, "games_per_file": 2}
    return SelfplayConfig(**{**values, **overrides})


def _records(ctx: Context, board_type: str = "tic_tac_toe", stats: ReadStats | None = None) -> list[dict]:
    return list(read_games(game_files(job_directory(ctx.data_dir, board_type, ctx.job_id)), stats))


def test_records_follow_the_schema_and_replay_to_their_outcome(tmp_path):
    ctx = Context(tmp_path)
    result = run_selfplay(_config(), ctx)
    assert result["complete"] and result["games_done"] == 10 and not result["stopped"]
    records = _records(ctx)
    assert sorted(r["game_index"] for r in records) == list(range(10))
    assert len({r["game_id"] for r in records}) == 10
    for record in records:
        assert validate_record(record) is None
        assert record["board_type"] == "tic_tac_toe" and record["game"] == "tic_tac_toe"
        assert record["agents"] == ["mcts_8", "mcts_8"] and record["model_ids"] == [None, None]
        assert record["code_version"] == CODE_VERSION and record["node_id"] == "node-a" and record["job_id"] == "sp-job"
        assert record["termination"] == "terminal" and record["length"] == len(record["moves"])
        assert record["started_at"] <= record["finished_at"]
        state = BUILTIN.load("tic_tac_toe").new_initial_state()
        for move, policy in zip(record["moves"], record["policies"]):
            assert {int(a) for a in policy} <= set(state.legal_actions())
            assert sum(policy.values()) == pytest.approx(1.0, abs=1e-4)
            state.apply_action(move)
        assert state.is_terminal() and state.returns() == record["outcome"]
    files = sorted(p.name for p in game_files(job_directory(tmp_path, "tic_tac_toe", "sp-job")))
    assert files == [f"games-1-{n:05d}.jsonl" for n in range(1, len(files) + 1)]
    assert ctx.reports[-1]["games_done"] == 10 and ctx.reports[-1]["games_total"] == 10
    assert ctx.reports[-1]["positions"] == sum(r["length"] for r in records)
    assert all(k in ctx.reports[-1] for k in ("positions_per_s", "eval_leaves_per_call"))


def test_same_job_same_games_and_seeds_differ_per_game(tmp_path):
    first = _records(_run(tmp_path / "a"))
    second = _records(_run(tmp_path / "b"))
    assert {r["game_id"]: r["seed"] for r in first} == {r["game_id"]: r["seed"] for r in second}
    assert len({r["seed"] for r in first}) == len(first)


def _run(data_dir: Path) -> Context:
    ctx = Context(data_dir)
    run_selfplay(_config(), ctx)
    return ctx


def test_a_killed_run_leaves_whole_files_and_a_restart_completes_without_duplicates(tmp_path):
    crashed = Context(tmp_path, crash_after=2)
    with pytest.raises(Crash):
        run_selfplay(_config(), crashed)
    directory = job_directory(tmp_path, "tic_tac_toe", "sp-job")
    stats = ReadStats()
    survivors = _records(crashed, stats=stats)
    # two flushes of at least two games each (games finishing on the same move share a file), all whole
    assert len(survivors) == crashed.reports[-1]["games_done"] >= 4 and stats.skipped == 0
    assert len(game_files(directory)) == 2
    assert not list(directory.glob(".*"))  # no temp files left behind
    # A torn last line, as a writer killed mid-write by something other than our atomic rename leaves it.
    torn = json.dumps(survivors[0] | {"game_id": "sp-job-0000009"})
    (directory / "games-1-00099.jsonl").write_text(torn[: len(torn) // 2])
    # And the temp file of a writer killed before its rename: never read, removed by the next attempt.
    stale = directory / ".games-1-00003.jsonl.x1y2.tmp"
    stale.write_text(json.dumps(survivors[0] | {"game_id": "sp-job-0000008"}) + "\n")

    restarted = Context(tmp_path, attempt=2)
    result = run_selfplay(_config(), restarted)
    assert result["resumed_games"] == len(survivors) and result["skipped_lines"] == 1 and result["complete"]
    stats = ReadStats()
    records = _records(restarted, stats=stats)
    assert stats.torn == 1 and stats.duplicates == 0
    ids = [r["game_id"] for r in records]
    assert len(ids) == len(set(ids)) == 10
    assert {r["attempt"] for r in records} == {1, 2}
    assert any(p.name.startswith("games-2-") for p in game_files(directory))
    assert not stale.exists()

    third = Context(tmp_path, attempt=3)  # nothing left to do: no new files, no new games
    assert run_selfplay(_config(), third)["games_done"] == 10
    assert not any(p.name.startswith("games-3-") for p in game_files(directory))


def test_graceful_stop_flushes_finished_games_and_stops(tmp_path):
    ctx = Context(tmp_path, stop_after=1)
    result = run_selfplay(_config(num_games=50), ctx)
    assert result["stopped"] and not result["complete"]
    assert len(ctx.reports) == 1
    assert len(_records(ctx)) == result["games_done"] >= 2
    resumed = Context(tmp_path, attempt=2)
    assert run_selfplay(_config(num_games=50), resumed)["complete"]
    assert len(_records(resumed)) == 50


def test_max_moves_ends_games_as_max_length(tmp_path):
    ctx = Context(tmp_path)
    run_selfplay(_config(board_type="square8", agent="random", num_games=3, max_moves=5), ctx)
    records = _records(ctx, "square8")
    assert [r["termination"] for r in records] == ["max_length"] * 3
    assert all(r["length"] == 5 for r in records)


def test_model_id_selects_a_network_agent_and_loads_the_registered_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = PolicyValueNet(ResNetConfig.for_game(BUILTIN.spec("tic_tac_toe"), blocks=1, channels=8))
    save_checkpoint(model_path(tmp_path, "m1"), net, code_version=CODE_VERSION)
    config = _config(model_id="m1", agent=None, num_games=4, parallel_games=4)
    assert config.agent_spec().name == "model:m1+gumbel_64"
    ctx = Context(tmp_path)
    run_selfplay(config.model_copy(update={"agent": "gumbel_8"}), ctx)
    records = _records(ctx)
    assert len(records) == 4 and records[0]["model_ids"] == ["m1", "m1"]
    assert records[0]["agents"] == ["model:m1+gumbel_8"] * 2
    assert ctx.reports[-1]["eval_leaves_per_call"] > 1


@pytest.mark.parametrize("bad", [
    {"board_type": "no_such_game"},
    {"agent": "mcts"},
    {"agent": "model:a+mcts_4", "model_id": "b"},
    {"num_games": 0},
    {"num_games": 1_000_001},
    {"parallel_games": 1025},
    {"unknown_field": 1},
])
def test_config_is_validated(bad):
    with pytest.raises(ValidationError):
        SelfplayConfig(**{"num_games": 4, **bad})


def test_selfplay_is_a_registered_job_type():
    job_type = JOB_TYPES.get("selfplay")
    # The job runs run_selfplay in process, or with served games (actors/selfplay_workers.py).
    assert job_type.config_model is SelfplayConfig and job_type.run is run_selfplay_job and job_type.wants_gpu


def test_read_games_skips_invalid_records_and_duplicates(tmp_path):
    ctx = Context(tmp_path)
    run_selfplay(_config(num_games=2, games_per_file=5), ctx)
    [good_file] = game_files(job_directory(tmp_path, "tic_tac_toe", "sp-job"))
    first = json.loads(good_file.read_text().splitlines()[0])
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps(first) + "\n" + json.dumps({**first, "game_id": "x", "moves": "e4"}) + "\n\n")
    stats = ReadStats()
    records = list(read_games([good_file, extra], stats))
    assert len(records) == 2
    assert (stats.duplicates, stats.invalid, stats.torn, stats.skipped, stats.files) == (1, 1, 0, 2, 2)



def test_heuristic_selfplay_runs(tmp_path):
    """Agents without leaf-evaluation counters (heuristic, minimax) self-play too."""
    ctx = Context(data_dir=tmp_path, job_id="heur")
    result = run_selfplay(SelfplayConfig(board_type="tic_tac_toe", agent="heuristic", num_games=2), ctx)
    assert result["games_done"] == 2 and "eval_network_calls" not in result


@pytest.mark.parametrize("agent", ["mcts_16", "gumbel_16"])
def test_tree_reuse_is_on_by_default_and_progress_reports_the_carried_visits(tmp_path, agent):
    reused = Context(tmp_path / "reuse")
    run_selfplay(_config(agent=agent, num_games=4), reused)
    report = reused.reports[-1]
    assert report["carried_simulations"] > 0 and 0 < report["carried_per_search"] < 16
    assert len(_records(reused)) == 4
    fresh = Context(tmp_path / "fresh")
    run_selfplay(_config(agent=agent, num_games=4, tree_reuse=False), fresh)
    assert fresh.reports[-1]["carried_simulations"] == 0 == fresh.reports[-1]["carried_per_search"]
    assert len(_records(fresh)) == 4
