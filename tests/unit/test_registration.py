"""The registrar's decision for one training run (orchestrator.learn.registration), without Ray."""
from __future__ import annotations

from orchestrator.learn.model_records import DataWindow, ModelRecord, game_ids_digest
from orchestrator.learn.registration import Register, Settle, is_settled, registration_step, settled_run

RUN = {"run_id": "r1", "job_id": "r1", "model_id": "r1-pv", "node_id": "n1", "created_at": 1.0, "epoch": 3,
       "leader_id": "a"}


def _record(model_id: str = "r1-pv", sha: str = "a" * 64, status: str = "candidate") -> dict:
    return ModelRecord(model_id=model_id, board_type="tic_tac_toe", kind="policy_value", parent=None, created_at=5.0,
                       data_window=DataWindow(files=(), game_count=0, game_ids_digest=game_ids_digest(())),
                       training_config={}, metrics={}, code_version="0", path=f"models/{model_id}.pt", sha256=sha,
                       status=status).to_dict()


def _job(state: str = "completed", **result) -> dict:
    done = {"model": _record(), "checkpoint_verified": True, "stopped": False, **result}
    return {"state": state, "error": None, "result": done if state == "completed" else None}


def test_a_verified_result_is_registered_whoever_commissioned_the_run():
    step = registration_step(RUN, _job(registration="registration refused: stale epoch 3"), None)
    assert step == Register("r1-pv", _record())
    # The epoch the run was commissioned under plays no part: any current leader writes it.
    assert registration_step({**RUN, "epoch": 1, "leader_id": "gone"}, _job(), None) == step


def test_nothing_happens_while_the_job_runs_or_cannot_be_asked():
    assert registration_step(RUN, {"state": "running", "result": None}, None) is None
    assert registration_step(RUN, {"state": "pending", "result": None}, None) is None
    assert registration_step(RUN, None, None) is None


def test_registering_twice_is_settling_once():
    # The registrar died after writing the model and before noting the run: the next pass notes it.
    assert registration_step(RUN, _job(), _record()) == Settle(True, "registered (model r1-pv)")
    assert registration_step(RUN, None, _record(status="best")).registered, "a promoted model is not written again"


def test_runs_that_produce_no_registrable_model_are_settled_unregistered():
    cases = {
        "failed": {"state": "failed", "error": "ValueError: no games", "result": None},
        "stopped": {"state": "completed", "result": {"stopped": True}},
        "unverified": _job(checkpoint_verified=False),
        "other id": _job(model=_record("someone-else")),
        "bad record": _job(model={**_record(), "sha256": "nope"}),
        "not new": _job(model=_record(status="best")),
    }
    for name, job in cases.items():
        step = registration_step(RUN, job, None)
        assert isinstance(step, Settle) and not step.registered, (name, step)
    taken = registration_step(RUN, _job(), _record(sha="b" * 64))
    assert isinstance(taken, Settle) and not taken.registered and "another model" in taken.note
    never = registration_step({**RUN, "start_error": "Conflict: stale epoch"}, None, None)
    assert isinstance(never, Settle) and "never started" in never.note


def test_the_settled_run_names_the_epoch_it_was_registered_under():
    run = settled_run(RUN, Settle(True, "registered"), epoch=7, leader_id="b", now=9.0)
    assert is_settled(run) and not is_settled(RUN)
    assert run["registration"] == {"registered": True, "note": "registered under epoch 7 of b", "epoch": 7,
                                   "leader_id": "b", "at": 9.0}
    assert run["epoch"] == 3 and run["leader_id"] == "a", "the commissioning leader stays on record"
