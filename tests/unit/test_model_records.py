import sqlite3

import pytest

from orchestrator.errors import BadRequest, Conflict
from orchestrator.learn.model_records import (
    ROW_COLUMNS,
    DataFile,
    DataWindow,
    InvalidTransition,
    ModelRecord,
    game_ids_digest,
)

SHA = "a" * 64


def record(**overrides):
    values = dict(
        model_id="m-2",
        board_type="square8",
        kind="policy_value",
        parent="m-1",
        created_at=1_700_000_000.5,
        data_window=DataWindow(files=(DataFile("selfplay/a.jsonl", "b" * 64, "node-b"),), game_count=12,
                               game_ids_digest=game_ids_digest(["g1", "g2"])),
        training_config={"lr": 0.001, "batch_size": 256},
        metrics={"final_loss": 1.25},
        code_version="abc123",
        path="models/m-2.pt",
        sha256=SHA,
    )
    values.update(overrides)
    return ModelRecord(**values)


def test_row_round_trip_through_sqlite():
    original = record(status="best")
    row = original.to_row()
    assert tuple(row) == ROW_COLUMNS
    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row
    db.execute(f"CREATE TABLE models ({', '.join(ROW_COLUMNS)})")
    db.execute(f"INSERT INTO models VALUES ({', '.join('?' * len(ROW_COLUMNS))})", tuple(row.values()))
    loaded = ModelRecord.from_row(db.execute("SELECT * FROM models").fetchone())
    assert loaded == original
    assert ModelRecord.from_dict(original.to_dict()) == original


def test_record_does_not_share_mutable_state_with_the_caller():
    config = {"lr": 0.001}
    rec = record(training_config=config)
    config["lr"] = 1.0
    assert rec.training_config == {"lr": 0.001}
    rec.to_dict()["training_config"]["lr"] = 2.0
    assert rec.training_config == {"lr": 0.001}


@pytest.mark.parametrize("field, value", [
    ("model_id", "bad id"),
    ("kind", "transformer"),
    ("parent", "m-2"),
    ("created_at", float("nan")),
    ("path", "/etc/passwd"),
    ("path", "models/../../x.pt"),
    ("sha256", "ABC"),
    ("status", "deleted"),
    ("metrics", {"loss": float("inf")}),
    ("training_config", {"fn": object()}),
    ("code_version", ""),
])
def test_invalid_fields_are_named(field, value):
    with pytest.raises(ValueError, match=field) as info:
        record(**{field: value})
    assert isinstance(info.value, BadRequest)


def test_data_window_validation():
    with pytest.raises(ValueError, match="data_window.files"):
        DataWindow(files=(DataFile("a.jsonl", SHA), DataFile("a.jsonl", SHA)), game_count=1,
                   game_ids_digest=SHA)
    with pytest.raises(ValueError, match="game_count"):
        DataWindow(files=(), game_count=-1, game_ids_digest=SHA)
    with pytest.raises(ValueError, match="data_window.files.path"):
        DataFile("../a.jsonl", SHA)
    with pytest.raises(ValueError, match="data_window.files.node_id"):
        DataFile("a.jsonl", SHA, "")


def test_corrupt_json_column_is_reported():
    row = record().to_row()
    row["metrics"] = "{not json"
    with pytest.raises(ValueError, match="metrics"):
        ModelRecord.from_row(row)


def test_game_ids_digest_ignores_order_and_repeats():
    assert game_ids_digest(["b", "a", "a"]) == game_ids_digest(["a", "b"])
    assert game_ids_digest(["a"]) != game_ids_digest(["a", "b"])


def test_status_transitions():
    candidate = record()
    assert candidate.status == "candidate"
    best = candidate.transition("best")
    assert best.status == "best" and candidate.status == "candidate"
    assert best.transition("best") is best  # a retried promotion changes nothing
    rolled = best.transition("rolled_back")
    assert rolled.transition("candidate").status == "candidate"
    archived = best.transition("archived")
    assert archived.transition("best").status == "best"  # a rollback restores a former best
    with pytest.raises(InvalidTransition) as info:
        candidate.transition("rolled_back")
    assert isinstance(info.value, Conflict) and "allowed" in str(info.value)
    with pytest.raises(InvalidTransition):
        rolled.transition("best")
    with pytest.raises(ValueError, match="status"):
        candidate.transition("gone")


def test_agent_params_and_nnue_kinds_and_no_parent():
    for kind in ("nnue", "agent_params"):
        assert record(kind=kind, parent=None).kind == kind
