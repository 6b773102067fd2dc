"""Epoch fencing in the cluster store: terms only go up; only the newest term's holder writes."""
import pytest

from orchestrator.cluster.fencing import ClusterDB
from orchestrator.errors import BadRequest, Conflict


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


def test_a_write_once_keeps_the_first_record_and_answers_it_to_every_writer(db, tmp_path):
    with pytest.raises(Conflict):
        db.write_once("eval_games", "g1", {"result": 1}, epoch=1, writer="a")
    db.begin_term("a", 1)
    first = db.write_once("eval_games", "g1", {"result": 1}, epoch=1, writer="a")
    assert first["created"] is True and first["doc"] == {"result": 1}
    second = db.write_once("eval_games", "g1", {"result": 0}, epoch=1, writer="a")
    assert second["created"] is False and second["doc"] == {"result": 1}
    db.begin_term("b", 2)
    with pytest.raises(Conflict):
        db.write_once("eval_games", "g2", {"result": 0}, epoch=1, writer="a")
    assert ClusterDB(tmp_path / "cluster.db").list("eval_games") == {"g1": {"result": 1}}


def test_concurrent_writes_once_of_one_key_have_one_winner(db, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    db.begin_term("a", 1)
    other = ClusterDB(tmp_path / "cluster.db")  # a second connection: the file, not our lock, decides
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda k: (db, other)[k % 2].write_once("eval_games", "g", {"by": k}, epoch=1,
                                                                           writer="a"), range(16)))
    assert sum(a["created"] for a in answers) == 1
    assert len({a["doc"]["by"] for a in answers}) == 1 and db.read("eval_games", "g") == answers[0]["doc"]


def test_settings_first_writer_wins(db):
    assert db.setting_once("voters", ["a", "b"]) == ["a", "b"]
    assert db.setting_once("voters", ["c"]) == ["a", "b"]


def test_a_null_setting_is_refused_so_a_later_value_is_still_recorded(db):
    with pytest.raises(BadRequest):
        db.setting_once("voters", None)
    assert db.setting_once("voters", ["a"]) == ["a"]


@pytest.mark.parametrize("epoch", [0, -1, 2**63, 1180591620717411303424, True, "7"])
def test_epochs_outside_64_bits_are_bad_requests_not_crashes(db, epoch):
    for call in (lambda: db.begin_term("a", epoch), lambda: db.epoch_holder(epoch),
                 lambda: db.write("k", "v", {}, epoch=epoch, writer="a")):
        with pytest.raises(BadRequest) as bad:
            call()
        assert bad.value.extra["field"] == "epoch"
    assert db.begin_term("a", 2**63 - 1)["created"] is True
    assert db.epoch_holder(2**63 - 1) == "a" and db.epoch_holder(5) is None


def test_voters_are_recorded_once_and_read_back(db):
    assert db.voters() is None
    assert db.form_voters(["b", "a"]) == {"voters": ["a", "b"], "version": 1}
    assert db.form_voters(["c"]) == {"voters": ["a", "b"], "version": 1}, "a later node reads the record"
    assert db.voters() == {"voters": ["a", "b"], "version": 1}


def test_only_the_newest_term_changes_voters_and_a_term_begins_only_under_the_recorded_set(db):
    db.form_voters(["a"])
    with pytest.raises(Conflict):
        db.change_voters(["b"], [], epoch=1, writer="a")  # no term begun
    db.begin_term("a", 1, voters_version=1)
    assert db.change_voters(["b", "c"], [], epoch=1, writer="a") == {"voters": ["a", "b", "c"], "version": 2}
    assert db.change_voters(["b"], [], epoch=1, writer="a")["version"] == 2, "a retry changes nothing"
    with pytest.raises(Conflict) as stale:
        db.begin_term("b", 2, voters_version=1)
    assert stale.value.extra["voters_version"] == 2
    db.begin_term("c", 3, voters_version=2)
    with pytest.raises(Conflict):
        db.change_voters([], ["c"], epoch=1, writer="a")  # a deposed leader
    with pytest.raises(BadRequest):
        db.change_voters([], ["a", "b", "c"], epoch=3, writer="c")
    assert db.change_voters([], ["a"], epoch=3, writer="c") == {"voters": ["b", "c"], "version": 3}
    assert db.begin_term("b", 4)["created"], "configured voters (no version) are not checked"
