"""Self-play through the API on a real cluster: placement by the leader, forwarding, analytics, stats."""
import json
from pathlib import Path

from tests.harness import wait_until

SMALL = {"board_type": "tic_tac_toe", "agent": "mcts_16", "num_games": 6, "parallel_games": 3}
LONG = {"board_type": "tic_tac_toe", "agent": "mcts_16", "num_games": 100000, "parallel_games": 2}


def _pair(gateways, prefix):
    voters = [f"{prefix}-a", f"{prefix}-b"]
    a = gateways.start(voters[0], gateways.ray_node_id(0), voters=voters)
    b = gateways.start(voters[1], gateways.ray_node_id(1), voters=voters)
    leader = wait_until(lambda: a.status()["leader_id"] == b.status()["leader_id"] and a.status()["leader_id"],
                        what="a leader")
    return (a, b) if leader == a.node_id else (b, a)


def _finished(node, job_id):
    return wait_until(lambda: (j := node.job(job_id))["state"] in ("completed", "failed") and j, timeout_s=120,
                      what=f"{job_id} finished")


def test_leader_places_selfplay_and_analytics_count_the_games(gateways):
    leader, follower = _pair(gateways, "sp")
    started = follower.post_to_leader("/selfplay/start", json=SMALL)  # a lease lapsing while the term settles is retried
    assert started.status_code == 200, started.text
    assert started.headers["X-P2P-Leader"] == leader.node_id, "a follower forwards to the leader"
    body = started.json()
    owner = leader if body["node_id"] == leader.node_id else follower
    job = _finished(owner, body["job_id"])
    assert job["state"] == "completed" and job["result"]["games_done"] == 6
    files = sorted(Path(job["result"]["directory"]).glob("*.jsonl"))
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len({r["game_id"] for r in records}) == 6 and all(r["node_id"] == owner.node_id for r in records)
    analytics = follower.get("/games/analytics").json()
    ttt = analytics["board_types"]["tic_tac_toe"]
    assert analytics["unreachable"] == [] and ttt["games"] == 6 and ttt["games_last_hour"] == 6
    assert 5 <= ttt["mean_length"] <= 9 and sum(ttt["seat_win_rates"]) <= 1.0 + 1e-9
    assert sum(ttt["terminations"].values()) == 6
    # /mcts/stats is served from the cached view, which catches up within view_refresh_s.
    entry = wait_until(lambda: next((s for s in owner.get("/mcts/stats").json()["stats"]
                                     if s["agent"] == "mcts_16" and s["node_id"] == owner.node_id), None),
                       what="search stats of the finished job")
    assert entry["simulations"] > 0 and entry["mean_depth"] > 0 and entry["leaves_per_network_call"] >= 1


def test_explicit_node_workers_and_bad_input(gateways):
    leader, follower = _pair(gateways, "sq")
    explicit = follower.post("/selfplay/start", json={**SMALL, "node_id": follower.node_id, "num_games": 2})
    assert explicit.status_code == 200 and explicit.json()["node_id"] == follower.node_id
    assert "X-P2P-Leader" not in explicit.headers, "with a node_id any node starts it directly"
    for bad, field in (({"agent": "mcts_x"}, "agent"), ({"board_type": "chess9"}, "board_type"),
                       ({"num_games": 0}, "num_games"), ({"parallel_games": 5000}, "parallel_games")):
        answer = leader.post("/selfplay/start", json={**SMALL, **bad})
        assert answer.status_code == 400 and field in answer.json()["error"], (bad, answer.text)
    assert leader.post("/selfplay/start", json={**SMALL, "node_id": "ghost"}).status_code == 404
    registered = follower.post("/pipeline/selfplay_worker", json={"node_id": follower.node_id, "capacity": 3})
    assert registered.status_code == 200 and registered.headers["X-P2P-Leader"] == leader.node_id
    placed = leader.post("/selfplay/start", json={**SMALL, "num_games": 2}).json()
    assert placed["node_id"] == follower.node_id, "a registered worker with spare capacity is preferred"
    assert leader.post("/pipeline/selfplay_worker", json={"node_id": "ghost", "capacity": 1}).status_code == 404


def test_reduce_selfplay_stops_jobs_gracefully(gateways):
    leader, follower = _pair(gateways, "sr")
    ids = [leader.post("/selfplay/start", json={**LONG, "node_id": n.node_id}).json()["job_id"]
           for n in (leader, follower)]
    wait_until(lambda: sum(j["job_type"] == "selfplay" and j["state"] == "running" for j in leader.status()["jobs"]) == 2,
               timeout_s=60, what="two self-play jobs running")
    assert leader.post("/reduce_selfplay", json={}).status_code == 400
    assert leader.post("/reduce_selfplay", json={"target_jobs": 1, "factor": 0.5}).status_code == 400
    reduced = follower.post("/reduce_selfplay", json={"target_jobs": 0}).json()
    assert reduced["stopped_count"] == 2 and {s["job_id"] for s in reduced["stopped"]} == set(ids)
    for node, job_id in zip((leader, follower), ids):
        job = wait_until(lambda: (j := node.job(job_id))["state"] == "stopped" and j, timeout_s=60, what="stopped")
        assert job["result"]["stopped"] is True


def test_no_leader_means_503(gateways):
    lonely = gateways.start("sp-lonely", gateways.ray_node_id(0), voters=["sp-lonely", "sp-x", "sp-y"])
    answer = lonely.post("/reduce_selfplay", json={"target_jobs": 0})
    assert answer.status_code == 503 and answer.json()["leader_id"] is None
    assert lonely.post("/selfplay/start", json=SMALL).status_code == 503
