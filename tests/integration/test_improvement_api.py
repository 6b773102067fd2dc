"""The improvement loop through the API on the real cluster, on tic-tac-toe (its cycles take seconds;
the loop is the same code for any board_type, and test_improvement_square8.py runs the promotion
proof on square8).

One test, in three runs on one board, because each run starts from the ledger the previous one
left: (1) from scratch, a trained candidate is promoted over the untrained network by an SPRT under
the same search, and the non-regression check keeps it; (2) a deliberately weak candidate (that
untrained network, reported by a phase worker as a training result) is rejected by the SPRT; (3)
the same weak network is forced through a promotion SPRT with bounds it cannot fail, and the
non-regression SPRT rolls it back by itself. Every change of best is in /rollback/status with its
SPRT numbers.
"""
from __future__ import annotations

import uuid

from tests.harness import wait_until

BOARD = "tic_tac_toe"
SEARCH = "mcts_4"
TRAINING = {"steps": 1000, "batch_size": 64, "lr": 3e-3, "blocks": 1, "channels": 32, "report_every": 100, "seed": 3}
GATING = {"elo0": 0, "elo1": 150, "max_games": 200, "regression_elo0": -150, "regression_elo1": 0,
          "regression_max_games": 200, "search": SEARCH}
RUN_TIMEOUT_S = 240


def _leader(gateways):
    """A node on each of the session's Ray nodes (as in a deployment: evaluation games run on every
    Ray node and load networks through the orchestrator node there); returns the leader."""
    prefix = f"imp{uuid.uuid4().hex[:4]}"
    names = [f"{prefix}-{k}" for k in "abc"]
    nodes = [gateways.start(name, gateways.ray_node_id(i), voters=names, lease_ttl_s=8.0, actor_call_timeout_s=60.0)
             for i, name in enumerate(names)]
    leader = wait_until(lambda: (ids := {n.health()["leader_id"] for n in nodes}) and len(ids) == 1 and ids.pop(),
                        timeout_s=60, what="one leader")
    return next(n for n in nodes if n.node_id == leader)


def _post(node, path, body):
    """A leader-only call as a client makes it: retried while leadership is settling (503, or 409 from a
    node that has just stopped leading)."""
    answers = []
    wait_until(lambda: answers.append(node.post(path, json=body)) or not (
        answers[-1].status_code == 503 or answers[-1].status_code == 409 and "not the leader" in answers[-1].text),
        timeout_s=60, what=f"{path} answered by a leader")
    return answers[-1]


def _finished(node, run_id):
    def done():
        status = node.get("/improvement/status", params={"run_id": run_id}).json()
        return status.get("state") in ("finished", "failed", "cancelled") and status
    status = wait_until(done, timeout_s=RUN_TIMEOUT_S, interval_s=1.0, what=f"run {run_id} finished")
    assert status["state"] == "finished", (status["error"], status["errors"])
    return status


def _cycle(node, run_id):
    (cycle,) = node.get("/improvement_cycles/status", params={"run_id": run_id}).json()["cycles"]
    return cycle


def _cancel_leftovers(node, run_ids):
    """A run outlives its test in the session's cluster store: never leave one playing games."""
    for run_id in run_ids:
        node.post("/improvement/cancel", json={"run_id": run_id})


def test_improvement_promotes_rejects_a_weak_candidate_and_rolls_back_a_bad_promotion(gateways):
    node = _leader(gateways)
    suffix = uuid.uuid4().hex[:6]
    try:
        _three_runs(node, suffix)
    finally:
        _cancel_leftovers(node, [f"{kind}-{suffix}" for kind in ("grow", "weak", "forced")])


def _three_runs(node, suffix):

    # -- 1: from scratch, one cycle ----------------------------------------------------------------
    body = {"run_id": f"grow-{suffix}", "board_type": BOARD, "cycles": 1, "games_per_cycle": 1000,
            "training": TRAINING, "gating": GATING, "selfplay": {"bootstrap_agent": "mcts_8", "parallel_games": 64}}
    started = _post(node, "/improvement/start", body)
    assert started.status_code == 200, started.text
    again = _post(node, "/improvement/start", body).json()
    assert again["created"] is False and again["run_id"] == body["run_id"], "the same run_id and body is one run"
    _finished(node, body["run_id"])
    cycle = _cycle(node, body["run_id"])
    untrained = f"grow-{suffix}-untrained"
    trained = cycle["candidate"]
    assert cycle["outcome"] == "promoted", {k: cycle[k] for k in ("gating_llr", "gating_games", "elo_delta", "note")}
    assert cycle["baseline"] == untrained and cycle["games"] == 1000 and cycle["loss"] is not None
    assert cycle["decision"] == "promote" and cycle["gating_llr"] >= cycle["gating_bounds"][1]
    assert cycle["elo_delta"] > 0 and cycle["regression"]["decision"] == "H1"
    ledger = node.get("/rollback/status", params={"board_type": BOARD}).json()
    assert ledger["current_best"][BOARD] == trained
    kinds = [(e["kind"], e["model_id"]) for e in ledger["history"][BOARD]][-3:]
    assert kinds == [("initial", untrained), ("promotion", trained), ("non_regression_passed", trained)]
    promotion = ledger["history"][BOARD][-2]["evidence"]
    assert promotion["decision"] == "H1" and promotion["agent_a"] == f"model:{trained}+{SEARCH}"
    assert promotion["agent_b"] == f"model:{untrained}+{SEARCH}" and promotion["llr"] >= promotion["upper_bound"]
    models = {m["model_id"]: m for m in node.get("/models", params={"board_type": BOARD}).json()["models"]}
    assert models[trained]["status"] == "best" and models[untrained]["status"] == "archived"

    # -- 2: a weak candidate is rejected -------------------------------------------------------------
    weak = {"run_id": f"weak-{suffix}", "board_type": BOARD, "cycles": 1, "games_per_cycle": 20,
            "training": {**TRAINING, "steps": 20000}, "gating": GATING}
    assert _post(node, "/improvement/start", weak).status_code == 200
    cycle_id = f"weak-{suffix}-c1"
    report = {"cycle_id": cycle_id, "phase": "training", "result": {"model_id": untrained}}
    wait_until(lambda: node.post("/improvement/phase_complete", json=report).json().get("accepted"),
               timeout_s=60, what="the training phase reported once self-play is done")
    _finished(node, weak["run_id"])
    cycle = _cycle(node, weak["run_id"])
    assert cycle["candidate"] == untrained and cycle["baseline"] == trained
    assert cycle["outcome"] == "discarded" and cycle["decision"] == "discard" and cycle["gating_llr"] < 0
    assert node.get("/rollback/status", params={"board_type": BOARD}).json()["current_best"][BOARD] == trained

    # -- 3: a forced bad promotion is rolled back by the non-regression SPRT -------------------------------
    forced = {**weak, "run_id": f"forced-{suffix}", "gating": {**GATING, "elo0": -2000, "elo1": -1000}}
    assert _post(node, "/improvement/start", forced).status_code == 200
    report = {**report, "cycle_id": f"forced-{suffix}-c1"}
    wait_until(lambda: node.post("/improvement/phase_complete", json=report).json().get("accepted"),
               timeout_s=60, what="the training phase reported")
    _finished(node, forced["run_id"])
    cycle = _cycle(node, forced["run_id"])
    assert cycle["decision"] == "promote" and cycle["outcome"] == "rolled_back", (cycle["note"], cycle["regression"])
    assert cycle["regression"]["decision"] == "H0"
    history = node.get("/rollback/status", params={"board_type": BOARD}).json()["history"][BOARD]
    assert [(e["kind"], e["model_id"]) for e in history[-2:]] == [("promotion", untrained), ("rollback", trained)]
    assert history[-1]["evidence"]["decision"] == "H0" and history[-1]["evidence"]["llr"] <= history[-1]["evidence"]["lower_bound"]
    candidates = node.get("/rollback/candidates", params={"board_type": BOARD}).json()
    assert candidates["current_best"] == trained and untrained in [c["model_id"] for c in candidates["candidates"]]

    # -- an operator forces the weak network back; /rollback/auto undoes it by SPRT ------------------------
    forced_back = {"board_type": BOARD, "model_id": untrained, "reason": "operator test"}
    executed = _post(node, "/rollback/execute", forced_back).json()
    assert executed["changed"] is True and executed["best"] == untrained
    assert _post(node, "/rollback/execute", forced_back).json()["changed"] is False, "a retry is a no-op"
    check = _post(node, "/rollback/auto", {"board_type": BOARD, "gating": GATING}).json()
    assert check["created"] is True and check["check"]["best"] == untrained and check["check"]["previous"] == trained
    done = wait_until(lambda: (c := next(c for c in node.get("/rollback/status", params={"board_type": BOARD})
                                         .json()["checks"] if c["check_id"] == check["check"]["check_id"]))
                      ["state"] == "finished" and c, timeout_s=RUN_TIMEOUT_S, interval_s=1.0, what="the check")
    assert done["outcome"] == "rolled_back" and done["evidence"]["decision"] == "H0", done
    ledger = node.get("/rollback/status", params={"board_type": BOARD}).json()
    assert ledger["current_best"][BOARD] == trained
    assert [e["kind"] for e in ledger["history"][BOARD][-2:]] == ["manual_rollback", "rollback"]

    # -- views ------------------------------------------------------------------------------------
    trends = node.get("/trends/summary", params={"board_type": BOARD}).json()
    assert trends["current_best"] == trained and trends["promotions"] >= 1 and trends["rollbacks"] >= 3
    points = node.get("/trends/history", params={"board_type": BOARD}).json()["points"]
    assert [p["outcome"] for p in points][-3:] == ["promoted", "discarded", "rolled_back"]
    board = node.get("/improvement_cycles/leaderboard", params={"board_type": BOARD}).json()
    rated = {row["model_id"]: row for row in board["rows"]}
    assert rated[trained]["role"] == "best" and rated[untrained]["role"] == "former_best"


def test_bad_requests_name_the_field(gateways):
    node = _leader(gateways)
    cases = [({"training": {"steps": 0}}, "training.steps"), ({"gating": {"alpha": 0.9}}, "gating.alpha"),
             ({"training": {"parent": "x"}}, "training"), ({"gating": {"surprise": 1}}, "gating.surprise"),
             ({"cycles": 2**63}, "cycles"), ({"board_type": "chess9"}, "board_type"), ({"colour": 1}, "colour")]
    for body, field in cases:
        answer = node.post("/improvement/start", json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["status"] == "error" and field in answer.json()["error"], (body, answer.json())
    nobody = node.post("/improvement/start", json={"node_id": "nobody"})
    assert nobody.status_code == 404 and nobody.json()["node_id"] == "nobody"
    missing = node.get("/improvement/status", params={"run_id": "never-started"})
    assert missing.status_code == 404 and missing.json()["code"] == 404
    bad_phase = node.post("/improvement/phase_complete", json={"cycle_id": "nope", "phase": "training"})
    assert bad_phase.status_code == 404
    unknown = node.post("/rollback/execute", json={"board_type": BOARD, "model_id": "never-best", "reason": "x"})
    assert unknown.status_code == 409 and "never the best" in unknown.json()["error"]
    paths = node.get("/openapi.json").json()["paths"]
    for path in ("/improvement/start", "/improvement/status", "/improvement/phase_complete", "/improvement_cycles/status",
                 "/improvement_cycles/leaderboard", "/pipeline/start", "/pipeline/status", "/rollback/status",
                 "/rollback/candidates", "/rollback/execute", "/rollback/auto", "/trends/summary", "/trends/history"):
        assert path in paths, path
