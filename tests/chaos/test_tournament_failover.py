"""A tournament survives its leader and its own actor: the leader's Ray node is killed mid-tournament,
then the TournamentActor itself; a new leader's term finishes the tournament, every game is stored
once, no finished game is played again and no result is lost."""
import ray

from actors.naming import CLUSTER_STORE, TOURNAMENT_ACTOR, lookup
from tests.conftest import node_args
from tests.harness import wait_until

TOURNAMENT = "tf-t1"
# More games than the session's 8 CPUs hold in flight (4 per task), so the first result stored
# leaves at least one wave unplayed however fast the machine is.
GAMES = 64
BODY = {"tournament_id": TOURNAMENT, "agents": ["openspiel_mcts_200", "openspiel_mcts_50"], "games_per_match": GAMES,
        "board_type": "connect_four", "opening_plies": 4}


def _status(node):
    return node.get("/tournament/status", params={"tournament_id": TOURNAMENT}).json()["tournament"]


def _stored():
    games = ray.get(lookup(CLUSTER_STORE).list.remote("eval_games"), timeout=30)
    return {gid: doc for gid, doc in games.items() if doc["source_id"] == TOURNAMENT}


def test_leader_killed_during_a_tournament(gateways, ray_cluster):
    voters = ["tf-a", "tf-b", "tf-z"]
    extra = ray_cluster.add_node(**node_args("127.0.0.7"))
    ray_cluster.wait_for_nodes()
    z = gateways.start("tf-z", extra.node_id, voters=voters)
    b = gateways.start("tf-b", gateways.ray_node_id(1), voters=voters)
    a = gateways.start("tf-a", gateways.ray_node_id(0), voters=voters)
    wait_until(lambda: all(n.health()["leader_id"] == "tf-z" for n in (a, b, z)), timeout_s=30, what="tf-z leads")
    started = wait_until(lambda: (r := z.post("/tournament/start", json=BODY)).status_code != 503 and r, timeout_s=30,
                         what="tournament started")
    assert started.status_code == 200, started.text

    before = wait_until(lambda: (s := _status(a))["done"] >= 2 and s, timeout_s=60, interval_s=0.2,
                        what="some games stored")
    assert before["state"] == "running" and before["done"] < before["total"], "killed mid-tournament"
    gateways.stop_gateway("tf-z")
    ray_cluster.remove_node(extra, allow_graceful=False)
    gateways.nodes.pop("tf-z")
    wait_until(lambda: a.health()["leader_id"] in ("tf-a", "tf-b") and a.health()["leader_id"] == b.health()["leader_id"],
               timeout_s=60, what="a new leader")
    kept = _stored()
    assert len(kept) >= before["done"], "nothing stored before the failover is lost"

    done = wait_until(lambda: (s := _status(a))["state"] == "finished" and s, timeout_s=180, interval_s=0.5,
                      what="the new leader's term finishes the tournament")
    assert done["done"] == done["total"] == GAMES
    played = sum(n["done"] for n in done["nodes"])
    assert played == GAMES, f"{played} games came back for {GAMES} scheduled: a finished game was played again"

    # the actor itself restarts and reloads: nothing is replayed or rewritten
    stored = _stored()
    ray.kill(lookup(TOURNAMENT_ACTOR), no_restart=False)
    # ray.kill returns before the old incarnation is gone; per-node progress lives only in memory, so an
    # empty `nodes` marks the answer of the restarted actor, which must have reloaded the rest.
    again = wait_until(lambda: (r := a.get("/tournament/status", params={"tournament_id": TOURNAMENT})).status_code
                       == 200 and r.json()["tournament"]["nodes"] == [] and r.json()["tournament"], timeout_s=90,
                       what="the restarted actor answers")
    assert again["state"] == "finished" and again["done"] == GAMES
    assert _stored() == stored, "every game is stored once and never rewritten"
    assert all(stored[gid] == doc for gid, doc in kept.items()), "results from before the failover are unchanged"
