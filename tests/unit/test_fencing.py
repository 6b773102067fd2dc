"""Epoch fencing in the cluster store: terms only go up; only the newest term's holder writes."""
import pytest

from orchestrator.cluster.fencing import ClusterDB
from orchestrator.errors import Conflict


@pytest.fixture
def db(tmp_path):
    return ClusterDB(tmp_path / "cluster.db")


def test_terms_strictly_increase_and_retries_are_idempotent(db):
    assert db.begin_term("a", 1)["created"] is True
    assert db.begin_term("a", 1)["created"] is False
    with pytest.raises(Conflict):
        db.begin_term("b", 1)
    db.begin_term("b", 5)
    with pytest.raises(Conflict):
        db.begin_term("a", 3)
    assert [(h["epoch"], h["node_id"]) for h in db.epoch_history()] == [(1, "a"), (5, "b")]
    assert db.highest_epoch() == (5, "b")


def test_only_the_current_term_writes(db, tmp_path):
    with pytest.raises(Conflict):
        db.write("models", "m1", {"x": 1}, epoch=1, writer="a")
    db.begin_term("a", 1)
    db.write("models", "m1", {"x": 1}, epoch=1, writer="a")
    db.begin_term("b", 2)
    with pytest.raises(Conflict) as refused:
        db.write("models", "m1", {"x": 2}, epoch=1, writer="a")
    assert refused.value.extra["leader_id"] == "b"
    with pytest.raises(Conflict):
        db.write("models", "m1", {"x": 2}, epoch=2, writer="a")
    db.write("models", "m2", {"y": 1}, epoch=2, writer="b")
    again = ClusterDB(tmp_path / "cluster.db")
    assert again.read("models", "m1") == {"x": 1} and set(again.list("models")) == {"m1", "m2"}
    assert again.highest_epoch() == (2, "b")


def test_settings_first_writer_wins(db):
    assert db.setting_once("voters", ["a", "b"]) == ["a", "b"]
    assert db.setting_once("voters", ["c"]) == ["a", "b"]
