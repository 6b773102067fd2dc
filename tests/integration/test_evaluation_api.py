"""Evaluation through the API on the real cluster: a tournament played by Ray tasks to the end, ratings
and their history, results stored once, A/B tests decided by SPRT, a weak candidate's gauntlet
rejected, and a tournament spread over every node cancelled within seconds."""
import time

from orchestrator.play.evaluation import default_opening_plies
from orchestrator.play.games import BUILTIN
from tests.harness import wait_until

BOARD = "tic_tac_toe"
LEASE_TTL_S = 8.0


def _pair(gateways, prefix):
    # Long leases so a busy 2-core box does not change leaders mid-test.
    voters = [f"{prefix}-a", f"{prefix}-b"]
    a = gateways.start(voters[0], gateways.ray_node_id(0), voters=voters, lease_ttl_s=LEASE_TTL_S)
    b = gateways.start(voters[1], gateways.ray_node_id(1), voters=voters, lease_ttl_s=LEASE_TTL_S)
    leader = wait_until(lambda: a.status()["leader_id"] == b.status()["leader_id"] and a.status()["leader_id"],
                        what="a leader")
    return (a, b) if leader == a.node_id else (b, a)


def _ask(node, path, body):
    """A leader-only call, retried while no leader is known."""
    answers = []
    wait_until(lambda: answers.append(node.post(path, json=body)) or answers[-1].status_code != 503, timeout_s=30,
               what=f"{path} answered")
    return answers[-1]


def _tournament(node, tid):
    return node.get("/tournament/status", params={"tournament_id": tid}).json()["tournament"]


def _rows(node, **params):
    body = node.get("/elo/table", params={"board_type": BOARD, **params}).json()
    return body, {row["agent"]: row for row in body["rows"]}


def test_tournament_ratings_history_and_reported_results(gateways):
    leader, follower = _pair(gateways, "ev")
    body = {"agent_ids": ["random", "openspiel_mcts_100", "mcts_8"], "games_per_pairing": 4, "board_type": BOARD,
            "tournament_id": "ev-t1"}
    started = _ask(follower, "/tournament/start", body)
    assert started.status_code == 200 and started.headers["X-P2P-Leader"] == leader.node_id, started.text
    assert started.json()["created"] is True and started.json()["tournament"]["total"] == 12
    assert _ask(leader, "/tournament/start", body).json()["created"] is False, "same id, same body: one tournament"
    assert _ask(leader, "/tournament/start", {**body, "games_per_pairing": 6}).status_code == 409

    seen = []
    try:
        done = wait_until(lambda: seen.append(t := _tournament(follower, "ev-t1")) or (t["state"] == "finished" and t),
                          timeout_s=120, interval_s=0.05, what="tournament finished")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status: {seen[-1] if seen else None}") from None
    assert done["done"] == done["total"] == 12 and done["eta_s"] is None and done["errors"] == []
    assert done["games_per_s"] > 0 and any(0 < s["done"] < 12 and s["eta_s"] is not None for s in seen[:-1]) \
        or len(seen) == 1
    standings = {row["agent"]: row for row in done["standings"]}
    assert sum(row["games"] for row in standings.values()) == 24 and all(r["games"] == 8 for r in standings.values())
    assert standings["openspiel_mcts_100"]["points"] > standings["random"]["points"]

    table, rows = _rows(follower)
    assert table["anchor"] == "random" and rows["random"]["elo"] == 0 and set(rows) >= set(standings)
    assert rows["random"]["games"] == 8
    for row in rows.values():  # a finite estimate with its interval, or an open-ended interval and its bound
        if row["estimate"] == "estimated":
            assert row["ci_low"] <= row["elo"] <= row["ci_high"]
        else:
            assert row["elo"] is None and (row["ci_low"] is None) != (row["ci_high"] is None), row
    leaderboard = follower.get("/api/elo/leaderboard", params={"board_type": BOARD}).json()
    assert leaderboard == table
    history = follower.get("/elo/history", params={"agent": "random"}).json()["history"]
    assert [h["event_id"] for h in history] == ["ev-t1"] and history[0]["elo"] == 0
    assert follower.get("/elo/table", params={"board_type": BOARD, "anchor": "nobody"}).status_code == 404
    anchored = _rows(follower, anchor="mcts_8")[1]
    assert anchored["mcts_8"]["elo"] == 0

    report = {"match_id": "ev-ext-1", "agent_a": "heuristic", "agent_b": "random", "board_type": BOARD, "result": 1}
    first = follower.post("/tournament/match", json=report)
    assert first.status_code == 200 and first.json()["created"] is True
    assert follower.post("/tournament/match", json=report).json()["created"] is False
    assert _rows(leader)[1]["heuristic"]["games"] == 1, "the same match_id is stored once"
    for bad, field in (({"result": 0.3}, "result"), ({"agent_b": "heuristic"}, "agent_b"), ({"extra": 1}, "extra")):
        answer = follower.post("/tournament/match", json={**report, **bad})
        assert answer.status_code == 400 and field in answer.text, answer.text

    game = follower.post("/tournament/play_elo_match",
                         json={"agent_a": "openspiel_mcts_100", "agent_b": "random", "board_type": BOARD, "seed": 3})
    assert game.status_code == 200 and game.json()["game"]["result"] in (0.5, 1) and game.json()["game"]["saved"]
    late = follower.post("/tournament/result", json={"tournament_id": "ev-t1",
                                                     "results": [{"game_id": "ev-t1-0v1-0-0", "result": 0}]})
    assert late.status_code == 200 and late.json()["ignored"] == 1, "a stored game is not overwritten"
    stray = follower.post("/tournament/result", json={"tournament_id": "ev-t1",
                                                      "results": [{"game_id": "nope", "result": 0}]})
    assert stray.status_code == 400 and "results.0.game_id" in stray.text

    for bad, field in (({"agents": ["random", "mcts_x"]}, "agents"), ({"board_type": "chess9"}, "board_type"),
                       ({"games_per_match": 0}, "games_per_match"), ({"colour": "white"}, "colour")):
        base = {"agents": body["agent_ids"], "games_per_match": 4, "board_type": BOARD}
        answer = _ask(follower, "/tournament/start", {**base, **bad})
        assert answer.status_code == 400 and field in answer.text, (bad, answer.text)
    assert follower.get("/tournament/status", params={"tournament_id": "nope"}).status_code == 404


def test_abtests_and_gauntlets_decide_by_sprt(gateways):
    leader, follower = _pair(gateways, "ab")
    spec = {"test_id": "ab-strong", "agent_a": "openspiel_mcts_100", "agent_b": "random", "board_type": BOARD,
            "elo0": 0, "elo1": 100, "max_games": 200}
    created = _ask(follower, "/abtest/create", spec)
    assert created.status_code == 200 and created.json()["test"]["state"] == "created", created.text
    assert created.json()["test"]["opening_plies"] == default_opening_plies(BUILTIN.load(BOARD)), "the board's default"
    assert _ask(leader, "/abtest/create", {**spec, "test_id": "ab-plies", "opening_plies": 0}).json()["test"][
        "opening_plies"] == 0, "zero random plies is a choice, not 'the default'"
    assert _ask(leader, "/abtest/create", spec).json()["created"] is False
    assert _ask(leader, "/abtest/create", {**spec, "elo1": 50}).status_code == 409
    assert _ask(follower, "/abtest/run", {"test_id": "ab-strong"}).status_code == 200

    manual = _ask(leader, "/abtest/create", {**spec, "test_id": "ab-manual"}).json()["test"]
    assert manual["decision"] is None and manual["games"] == 0
    add = {"test_id": "ab-manual", "wins": 6, "draws": 2, "losses": 2, "submission_id": "w1"}
    assert follower.post("/abtest/result", json=add).status_code == 200
    status = follower.post("/abtest/result", json=add).json()["test"]
    assert (status["games"], status["wins"], status["draws"], status["losses"]) == (10, 6, 2, 2), "retry counted once"
    assert status["lower_bound"] < status["llr"] < status["upper_bound"] and status["decision"] is None
    assert status["elo"] > 0 and 0.5 < status["los"] <= 1 and status["state"] == "created"
    assert follower.post("/abtest/result", json={"test_id": "ab-manual", "pentanomial": [1, 2, 3, 2, 1]}).status_code == 409
    assert follower.post("/abtest/result", json={"test_id": "ab-manual", "wins": 1, "pentanomial": [0] * 5}).status_code == 400
    assert follower.post("/abtest/result", json={"test_id": "nope", "wins": 1}).status_code == 404
    decided = follower.post("/abtest/result", json={**add, "wins": 30, "draws": 10, "losses": 10,
                                                    "submission_id": "w2"}).json()["test"]
    assert decided["state"] == "finished" and decided["decision"] == "H1" and decided["games"] == 60
    assert follower.post("/abtest/result", json={**add, "submission_id": "w3"}).status_code == 409
    _ask(leader, "/abtest/create", {**spec, "test_id": "ab-cancel"})
    assert _ask(follower, "/abtest/cancel", {"test_id": "ab-cancel"}).json()["test"]["state"] == "cancelled"

    gauntlet = _ask(follower, "/gauntlet/execute", {"gauntlet_id": "g-weak", "candidate": "random",
                                                    "baselines": ["openspiel_mcts_100"], "board_type": BOARD,
                                                    "elo0": 0, "elo1": 50, "max_games": 200})
    assert gauntlet.status_code == 200, gauntlet.text
    quick = _ask(follower, "/gauntlet/quick-eval", {"candidate": "mcts_8", "baselines": ["random"], "games": 4,
                                                    "board_type": BOARD})
    assert quick.status_code == 200 and quick.json()["decision"] is None and "not a statistical decision" in quick.json()["note"]

    strong = wait_until(lambda: (s := follower.get("/abtest/status", params={"test_id": "ab-strong"}).json())
                        ["state"] == "finished" and s, timeout_s=90, interval_s=0.5, what="A/B test decided")
    assert strong["decision"] == "H1" and strong["llr"] >= strong["upper_bound"]
    assert strong["games"] % 2 == 0 and sum(strong["pentanomial"]) * 2 == strong["games"] < 200
    assert max(strong["pentanomial"]) == strong["pentanomial"][4], "winning both games of a pair is the rule"
    assert strong["elo_ci95"][0] <= strong["elo"] <= strong["elo_ci95"][1]

    weak = wait_until(lambda: (g := follower.get("/gauntlet/status", params={"gauntlet_id": "g-weak"}).json()
                               ["gauntlet"])["state"] == "finished" and g, timeout_s=90, interval_s=0.5,
                      what="gauntlet decided")
    assert weak["verdict"] == "failed" and weak["tests"][0]["decision"] == "H0"
    assert weak["tests"][0]["llr"] <= weak["tests"][0]["lower_bound"]
    history = follower.get("/elo/history", params={"agent": "random", "board_type": BOARD}).json()["history"]
    assert "g-weak" in [h["event_id"] for h in history]
    listed = follower.get("/abtest/list").json()["tests"]
    assert {"ab-strong", "ab-manual", "ab-cancel", "g-weak-b0"} <= {t["test_id"] for t in listed}
    quick_done = wait_until(lambda: (t := _tournament(follower, quick.json()["tournament_id"]))["state"] == "finished"
                            and t, timeout_s=60, what="quick eval finished")
    assert quick_done["total"] == 4 and quick_done["kind"] == "quick_eval"


def test_a_tournament_over_every_node_is_cancelled_within_seconds(gateways):
    leader, follower = _pair(gateways, "ssh")
    body = {"tournament_id": "ssh-t", "agents": ["openspiel_mcts_3000", "openspiel_mcts_2000"], "games_per_match": 200,
            "board_type": "connect_four"}
    assert _ask(follower, "/tournament/ssh_start", body).status_code == 200
    running = wait_until(lambda: (t := follower.get("/tournament/ssh_status", params={"tournament_id": "ssh-t"})
                                  .json()["tournament"])["in_flight"] > 0 and len(t["nodes"]) >= 3 and t,
                         timeout_s=30, what="games on every node")
    assert running["kind"] == "nodes" and all(n["dispatched"] > 0 for n in running["nodes"])
    cancelled_at = time.monotonic()
    answer = _ask(follower, "/tournament/ssh_cancel", {"tournament_id": "ssh-t"})
    assert answer.status_code == 200 and answer.json()["tournament"]["state"] == "cancelled"
    drained = wait_until(lambda: (t := _tournament(follower, "ssh-t"))["in_flight"] == 0 and t, timeout_s=10,
                         what="games in flight stopped")
    assert time.monotonic() - cancelled_at < 10 and drained["done"] < drained["total"]
    time.sleep(1.0)
    assert _tournament(follower, "ssh-t")["done"] == drained["done"], "no game is played after the cancel"
