"""The training job types on real tic-tac-toe self-play: lineage, skipped records, fenced registration,
loading registered models back, and the metric series helpers."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from orchestrator.cluster.fencing import ClusterDB
from orchestrator.learn.jobs import NNUE_TRAINING, TRAINING
from orchestrator.learn.model_records import ModelRecord, game_ids_digest
from orchestrator.learn.nnue import NNUEEvaluator
from orchestrator.learn.registry import ModelUnavailable, agent_params_doc, params_sha256, resolve_model
from orchestrator.learn.series import add_point, columns, downsample
from orchestrator.nn.checkpoint import load_checkpoint
from orchestrator.nn.resnet import PolicyValueNet
from orchestrator.play.agents import AgentContext, make_agent
from orchestrator.play.games import BUILTIN, GameCatalog
from orchestrator.play.records import game_files, read_games
from orchestrator.play.selfplay import SelfplayConfig, job_directory, run_selfplay

torch.set_num_threads(1)
BOARD = "tic_tac_toe"
KINDS = {"training": TRAINING, "nnue_training": NNUE_TRAINING}
SMALL = {"board_type": BOARD, "steps": 12, "batch_size": 32, "report_every": 4, "blocks": 1, "channels": 8}


@dataclass
class Context:
    """The JobContext protocol with a real fenced registry (ClusterDB) behind it."""

    data_dir: Path
    db: ClusterDB | None = None
    job_id: str = "train-1"
    node_id: str = "n1"
    attempt: int = 1
    games: GameCatalog = BUILTIN
    device: str = "cpu"
    reports: list[dict[str, Any]] = field(default_factory=list)
    data_origins: dict[str, str] = field(default_factory=dict)  # files copied here from other nodes -> their node

    def report(self, progress: dict[str, Any]) -> bool:
        self.reports.append(progress)
        return False

    def register_model(self, doc: dict[str, Any], epoch: int, writer: str) -> dict[str, Any]:
        return self.db.write("models", doc["model_id"], doc, epoch=epoch, writer=writer)

    def load_model(self, model_id: str) -> Any:
        return resolve_model(self.db.read("models", model_id), self.data_dir, self.device)


@pytest.fixture(scope="module")
def games_dir(tmp_path_factory) -> Path:
    """24 real games in three files, with distinct, known modification times (oldest first)."""
    data_dir = tmp_path_factory.mktemp("selfplay")
    ctx = Context(data_dir, job_id="sp")
    run_selfplay(SelfplayConfig(board_type=BOARD, agent="mcts_8", num_games=24, parallel_games=8,
                                games_per_file=8), ctx)
    files = game_files(job_directory(data_dir, BOARD, "sp"))
    for age, path in enumerate(reversed(files)):
        os.utime(path, (1_700_000_000 - age * 60, 1_700_000_000 - age * 60))
    return data_dir


@pytest.fixture
def data_dir(games_dir, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(games_dir, copy)
    return copy


def _files(data_dir: Path) -> list[Path]:
    return game_files(job_directory(data_dir, BOARD, "sp"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(job_type: str, config: dict, ctx: Context) -> dict:
    kind = KINDS[job_type]
    return kind.run(kind.config_model.model_validate(config), ctx)


def test_training_records_exactly_the_files_and_games_it_read(data_dir):
    ctx = Context(data_dir)
    result = _run("training", {**SMALL, "window_games": 1000}, ctx)
    record = ModelRecord.from_dict(result["model"])
    files = _files(data_dir)
    ids = [r["game_id"] for r in read_games(files)]
    assert record.kind == "policy_value" and record.status == "candidate" and record.board_type == BOARD
    assert {(f.path, f.sha256) for f in record.data_window.files} == \
        {(p.relative_to(data_dir).as_posix(), _sha(p)) for p in files}
    assert record.data_window.game_count == 24 and record.data_window.game_ids_digest == game_ids_digest(ids)
    assert record.path == "models/train-1.pt" and result["games_trained"] == 24 and result["skipped_note"] is None
    checkpoint = load_checkpoint(data_dir / record.path, record.sha256)
    assert isinstance(checkpoint.model, PolicyValueNet)
    assert checkpoint.metadata["data_window"]["game_count"] == 24
    assert result["registered"] is False and "no leader epoch" in result["registration"]
    assert result["checkpoint_verified"] is True, "left for the registrar, with the checkpoint read back"
    training = [r for r in ctx.reports if r.get("phase") == "training"]
    assert [r["step"] for r in training] == [4, 8, 12]
    assert all(r["samples_per_s"] > 0 and r["eta_s"] is not None and {"loss", "policy_loss", "value_loss"} <= set(r)
               and set(r["metrics"]) == {"loss", "policy_loss", "value_loss", "samples_per_s"} for r in training)
    assert record.metrics["steps"] == 12 and np.isfinite(record.metrics["final_loss"])


def test_the_window_takes_the_newest_games_and_lists_only_the_files_read(data_dir):
    result = _run("training", {**SMALL, "window_games": 10, "model_id": "w10"}, Context(data_dir))
    record = ModelRecord.from_dict(result["model"])
    newest_two = _files(data_dir)[1:]  # the fixture made the first file the oldest
    assert {f.path for f in record.data_window.files} == {p.relative_to(data_dir).as_posix() for p in newest_two}
    assert record.data_window.game_count == 10 and result["games_read"] == 10
    read = sorted(read_games(newest_two), key=lambda r: (r["finished_at"], r["game_id"]), reverse=True)[:10]
    assert record.data_window.game_ids_digest == game_ids_digest(r["game_id"] for r in read)


def test_a_torn_line_and_a_duplicated_game_are_skipped_and_reported(data_dir):
    first = _files(data_dir)[0]
    line = first.read_bytes().splitlines(keepends=True)[0]
    extra = job_directory(data_dir, BOARD, "copy")
    extra.mkdir(parents=True)
    (extra / "games-1-00001.jsonl").write_bytes(line + line[: len(line) // 2])  # a duplicate, then a torn line
    copied = "selfplay/tic_tac_toe/copy/games-1-00001.jsonl"
    result = _run("training", {**SMALL, "window_games": 1000}, Context(data_dir, data_origins={copied: "n2"}))
    assert result["skipped"]["duplicates"] == 1 and result["skipped"]["torn"] == 1
    assert "1 torn lines" in result["skipped_note"] and "1 duplicate games" in result["skipped_note"]
    record = ModelRecord.from_dict(result["model"])
    assert record.data_window.game_count == 24, "the duplicate is counted once"
    # the lineage names each file's node: the copy's source, and this node for the files it wrote
    assert {f.path: f.node_id for f in record.data_window.files} == \
        {copied: "n2", **{p.relative_to(data_dir).as_posix(): "n1" for p in _files(data_dir)}}
    assert {f["path"]: f["node_id"] for f in result["model"]["data_window"]["files"]}[copied] == "n2"


def test_registration_carries_the_leaders_epoch_and_a_deposed_leader_is_refused(data_dir, tmp_path):
    db = ClusterDB(tmp_path / "cluster.db")
    db.begin_term("lead-a", 1)
    ctx = Context(data_dir, db)
    fenced = {**SMALL, "window_games": 1000, "epoch": 1, "leader_id": "lead-a"}
    first = _run("training", {**fenced, "model_id": "m-1"}, ctx)
    assert first["registered"] is True and db.read("models", "m-1") == first["model"]
    network = ctx.load_model("m-1")
    assert isinstance(network, PolicyValueNet)
    child = _run("training", {**fenced, "model_id": "m-2", "parent": "m-1"}, ctx)
    assert child["registered"] and db.read("models", "m-2")["parent"] == "m-1"

    db.begin_term("lead-b", 2)
    late = _run("training", {**fenced, "model_id": "m-3"}, ctx)
    assert late["registered"] is False and "refused" in late["registration"] and "stale epoch" in late["registration"]
    assert db.read("models", "m-3") is None and (data_dir / "models" / "m-3.pt").exists()

    (data_dir / "models" / "m-1.pt").write_bytes(b"replaced")
    with pytest.raises(ModelUnavailable, match="corrupt or was replaced"):
        ctx.load_model("m-1")


def test_nnue_training_registers_a_loadable_evaluator(data_dir, tmp_path):
    db = ClusterDB(tmp_path / "cluster.db")
    db.begin_term("lead", 3)
    ctx = Context(data_dir, db, job_id="nnue-1")
    result = _run("nnue_training", {"board_type": BOARD, "steps": 10, "batch_size": 32, "report_every": 5,
                                    "hidden": [16, 8], "window_games": 1000, "epoch": 3, "leader_id": "lead"}, ctx)
    record = ModelRecord.from_dict(db.read("models", "nnue-1"))
    assert record.kind == "nnue" and record.path == "models/nnue-1.nnue" and record.data_window.game_count == 24
    evaluator = ctx.load_model("nnue-1")
    assert isinstance(evaluator, NNUEEvaluator) and result["registered"]
    state = BUILTIN.load(BOARD).new_initial_state()
    assert -1 < evaluator.evaluate_many([state], 0)[0] < 1
    minimax = make_agent("model:nnue-1+minimax_2", AgentContext(board_type=BOARD, load_model=ctx.load_model))
    assert minimax.select_many([state])[0].action in state.legal_actions()


def test_agent_params_resolve_inline_and_drive_the_heuristic(tmp_path):
    doc = agent_params_doc("tuned-1", "square8", {"corner": 3.0, "mobility": 0.5},
                           training_config={"run_id": "r"}, metrics={"best_fitness": 0.8})
    assert ModelRecord.from_dict(doc).kind == "agent_params"
    assert doc["sha256"] == params_sha256({"mobility": 0.5, "corner": 3.0}), "key order does not matter"
    assert resolve_model(doc, None) == {"corner": 3.0, "mobility": 0.5}
    agent = make_agent("heuristic@tuned-1",
                       AgentContext(board_type="square8", load_model=lambda _: resolve_model(doc, None)))
    assert agent.evaluator.weights["corner"] == 3.0 and agent.name == "heuristic@tuned-1"
    with pytest.raises(ModelUnavailable, match="sha256"):
        resolve_model({**doc, "params": {"corner": 4.0, "mobility": 0.5}}, None)
    with pytest.raises(ModelUnavailable, match="not on this node"):
        resolve_model({**doc, "kind": "policy_value", "path": "models/x.pt"}, tmp_path)


def test_bad_configs_and_an_empty_data_dir_are_refused(tmp_path):
    kind = TRAINING
    for bad in ({"steps": 5, "epochs": 1}, {"epoch": 2}, {"lr": float("nan")}, {"board_type": "chess9"},
                {"window_games": 0}, {"unknown": 1}):
        with pytest.raises(ValidationError):
            kind.config_model.model_validate({**SMALL, **bad})
    with pytest.raises(ValueError, match="no self-play games"):
        _run("training", SMALL, Context(tmp_path))


def test_metric_series_merge_thin_and_downsample():
    points: list = []
    for step in (10, 5, 10, 20):
        points = add_point(points, step, {"loss": float(step), "bad": float("nan"), "note": "x"})
    assert [p["step"] for p in points] == [5, 10, 20] and points[1]["metrics"] == {"loss": 10.0}
    points = add_point(points, 10, {"acc": 0.5})
    assert points[1]["metrics"] == {"loss": 10.0, "acc": 0.5}, "the same step merges"
    long: list = []
    for step in range(1, 30):
        long = add_point(long, step, {"loss": 1.0 / step}, max_points=10)
    assert len(long) <= 10 and long[0]["step"] == 1 and long[-1]["step"] == 29
    picked = downsample([{"step": s, "metrics": {"loss": s}} for s in range(100)], 5)
    assert [p["step"] for p in picked] == [0, 25, 50, 74, 99]
    assert columns(points) == {"steps": [5, 10, 20], "metrics": {"acc": [None, 0.5, None], "loss": [5.0, 10.0, 20.0]}}
    assert json.dumps(columns(long))  # plain JSON


def test_a_window_larger_than_the_memory_cap_streams_from_disk_with_the_same_lineage(data_dir):
    first = _files(data_dir)[0]
    line = first.read_bytes().splitlines(keepends=True)[0]
    extra = job_directory(data_dir, BOARD, "copy")
    extra.mkdir(parents=True)
    (extra / "games-1-00001.jsonl").write_bytes(line + line[: len(line) // 2])  # a duplicate, then a torn line
    config = {**SMALL, "window_games": 20, "batch_size": 16, "steps": 30}
    in_memory = _run("training", {**config, "model_id": "whole"}, Context(data_dir, job_id="whole"))
    ctx = Context(data_dir, job_id="capped")
    capped = _run("training", {**config, "model_id": "capped", "max_samples_in_memory": 40}, ctx)
    whole, streamed = ModelRecord.from_dict(in_memory["model"]), ModelRecord.from_dict(capped["model"])
    assert streamed.metrics["dataset_samples"] > 40 >= streamed.metrics["peak_samples_in_memory"] >= 16, \
        "never more than the cap held at once, though the window is larger"
    assert whole.metrics["peak_samples_in_memory"] == whole.metrics["dataset_samples"], "the default holds it whole"
    assert streamed.data_window == whole.data_window and streamed.data_window.game_count == 20
    assert capped["skipped"] == in_memory["skipped"] and capped["skipped"]["duplicates"] == 1
    assert capped["skipped"]["torn"] == 1 and streamed.metrics["positions"] == whole.metrics["positions"]
    assert np.isfinite(streamed.metrics["final_loss"]) and streamed.metrics["steps"] == 30
    assert not (data_dir / "cache" / "training" / "capped").exists(), "the sample cache goes with the job"
    with pytest.raises(ValidationError, match="max_samples_in_memory"):
        TRAINING.config_model.model_validate({**config, "max_samples_in_memory": 8})
