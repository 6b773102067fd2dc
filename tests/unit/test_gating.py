"""Promotion and rollback decisions and the per-board ledger (orchestrator.learn.gating)."""
import pytest
from pydantic import ValidationError

from orchestrator.learn import gating
from orchestrator.learn.model_records import TRANSITIONS

H1 = {"state": "finished", "decision": "H1", "llr": 3.1, "lower_bound": -2.94, "upper_bound": 2.94, "games": 120,
      "elo": 85.0, "elo_ci95": [30.0, 140.0], "los": 0.999, "wins": 60, "draws": 10, "losses": 50,
      "pentanomial": [1, 5, 20, 25, 9]}
H0 = {**H1, "decision": "H0", "llr": -3.0, "elo": -90.0}
RUNNING = {**H1, "state": "running", "decision": None, "llr": 0.4}
EXHAUSTED = {**H1, "state": "finished", "decision": None, "llr": 1.2, "games": 400}


def test_promotion_verdicts_follow_the_sprt_decision():
    assert gating.promotion_verdict(H1).action == "promote"
    assert gating.promotion_verdict(H0).action == "discard"
    assert gating.promotion_verdict(RUNNING).action == "wait"
    exhausted = gating.promotion_verdict(EXHAUSTED)
    assert exhausted.action == "discard" and "no SPRT decision after 400 games" in exhausted.reason
    assert gating.promotion_verdict({**RUNNING, "state": "cancelled"}).action == "discard"


def test_non_regression_verdicts_roll_back_only_on_h0():
    assert gating.regression_verdict(H0).action == "rollback"
    assert gating.regression_verdict(H1).action == "keep"
    assert gating.regression_verdict(EXHAUSTED).action == "keep"
    assert gating.regression_verdict(RUNNING).action == "wait"


def test_gating_config_is_validated_by_sprt_params_and_forbids_unknown_fields():
    config = gating.GatingConfig(elo0=0, elo1=100, search="gumbel_16")
    spec = config.abtest_spec("t1", "square8", "model:a+gumbel_16", "model:b+gumbel_16", regression=False)
    assert spec == {"test_id": "t1", "agent_a": "model:a+gumbel_16", "agent_b": "model:b+gumbel_16",
                    "board_type": "square8", "elo0": 0, "elo1": 100, "alpha": 0.05, "beta": 0.05,
                    "elo_model": "logistic", "max_games": 400, "opening_plies": None}
    regression = config.abtest_spec("t2", "square8", "model:a+gumbel_16", "model:b+gumbel_16", regression=True)
    assert (regression["elo0"], regression["elo1"]) == (-30.0, 0.0)
    for bad, field in (({"elo0": 10, "elo1": 5}, "elo0"), ({"alpha": 0.7}, "alpha"), ({"surprise": 1}, "surprise"),
                       ({"search": "model:x+mcts_8"}, "search"), ({"search": "random"}, "search"),
                       ({"elo_model": "bayes"}, "elo_model"), ({"regression_elo0": 1.0}, "regression_elo0"),
                       ({"max_games": 1}, "max_games")):
        with pytest.raises(ValidationError) as raised:
            gating.GatingConfig(**bad)
        assert field in str(raised.value), (bad, str(raised.value))


def _proof(agent_b, decision="H1"):
    return {"agent_b": agent_b, "decision": decision, "llr": 3.0}


def test_ledger_promotion_needs_h1_against_the_current_best_and_is_idempotent():
    ledger = gating.initial_best(gating.empty_ledger("square8"), "r:initial", "m0", 1.0, "untrained baseline")
    assert ledger["best"] == "m0"
    assert gating.initial_best(ledger, "r:initial", "m0", 2.0, "again") == ledger
    with pytest.raises(ValueError, match="already has a best"):
        gating.initial_best(ledger, "other:initial", "x", 2.0, "x")
    with pytest.raises(ValueError, match="accepted H1"):
        gating.promote(ledger, "c1:promote", "m1", 2.0, "r", _proof("model:m0+mcts_8", "H0"))
    with pytest.raises(ValueError, match="not the current best"):
        gating.promote(ledger, "c1:promote", "m1", 2.0, "r", _proof("model:zz+mcts_8"))
    promoted = gating.promote(ledger, "c1:promote", "m1", 2.0, "sprt", _proof("model:m0+mcts_8"))
    assert promoted["best"] == "m1" and promoted["events"][-1]["previous"] == "m0"
    assert promoted["events"][-1]["evidence"]["llr"] == 3.0
    assert gating.promote(promoted, "c1:promote", "m1", 3.0, "sprt", _proof("model:m0+mcts_8")) == promoted
    assert gating.previous_best(promoted) == "m0"


def test_rollback_restores_a_former_best_and_statuses_follow_the_ledger():
    ledger = gating.initial_best(gating.empty_ledger("hex"), "e0", "m0", 1.0, "init")
    ledger = gating.promote(ledger, "e1", "m1", 2.0, "sprt", _proof("model:m0+mcts_8"))
    ledger = gating.record_check(ledger, "e1b", "m1", 2.5, "kept", _proof("model:m0+mcts_8"))
    ledger = gating.promote(ledger, "e2", "m2", 3.0, "sprt", _proof("model:m1+mcts_8"))
    assert gating.former_bests(ledger) == ["m1", "m0"]
    assert gating.previous_best(ledger) == "m1"
    with pytest.raises(ValueError, match="never the best"):
        gating.rollback(ledger, "e3", "stranger", 4.0, "r", None)
    with pytest.raises(ValueError, match="already the best"):
        gating.rollback(ledger, "e3", "m2", 4.0, "r", None)
    rolled = gating.rollback(ledger, "e3", "m1", 4.0, "non-regression failed", _proof("model:m1+mcts_8", "H0"))
    assert rolled["best"] == "m1" and rolled["events"][-1]["kind"] == "rollback"
    assert gating.desired_statuses(rolled) == {"m1": "best", "m2": "rolled_back", "m0": "archived"}
    manual = gating.rollback(rolled, "e4", "m2", 5.0, "operator", None, manual=True)
    assert manual["events"][-1]["kind"] == "manual_rollback"
    assert gating.desired_statuses(manual) == {"m2": "best", "m1": "rolled_back", "m0": "archived"}


def test_status_path_uses_only_legal_model_record_transitions():
    assert gating.status_path("candidate", "best", TRANSITIONS) == ["best"]
    assert gating.status_path("rolled_back", "best", TRANSITIONS) == ["candidate", "best"]
    assert gating.status_path("best", "best", TRANSITIONS) == []
    assert gating.status_path("archived", "rolled_back", TRANSITIONS) == ["best", "rolled_back"]
