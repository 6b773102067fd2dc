"""A training run's window comes from every node's self-play, moved by the leader before the run
starts: self-play games exist only on one follower, training is placed on the other, and the run
shows the leader's planned sync (training priority) put them there, with the lineage naming the
node each file came from. Real nodes: own data dirs, real gateways, real Ray actors."""
import os

from actors.sync import JOB_PREFIX
from orchestrator.store import NodeStore, node_db_path
from orchestrator.sync.plan import PRIORITY_TRAINING
from tests.harness import wait_until
from tests.integration.test_sync_api import BOARD, PATIENT, _ask, _job_done, _selfplay

VOTERS = ["ts-a", "ts-b", "ts-c"]


def _trio(gateways):
    nodes = [gateways.start(name, gateways.ray_node_id(i), voters=VOTERS, **PATIENT) for i, name in enumerate(VOTERS)]

    def formed():
        views = [n.status() for n in nodes]
        leaders = {v["leader_id"] for v in views}
        return len(leaders) == 1 and None not in leaders and all(
            sum(p["state"] == "alive" for p in v["peers"]) == 3 for v in views)
    wait_until(formed, timeout_s=90, what="a leader and three alive peers")
    return nodes


def _transfers(node, sync_id):
    store = NodeStore(node_db_path(node.settings.node_dir()))
    try:
        return store.get("kv", JOB_PREFIX + sync_id)["transfers"]
    finally:
        store.close()


def test_the_leader_moves_a_training_window_from_the_selfplay_node_to_the_training_node_first(gateways):
    nodes = _trio(gateways)
    leader_id = nodes[0].status()["leader_id"]
    leader = next(n for n in nodes if n.node_id == leader_id)
    player, trainer = [n for n in nodes if n is not leader]
    job = _selfplay(player, "window-games", agent="random", num_games=12)
    assert job["state"] == "completed", job["error"]
    games = sorted(p.relative_to(player.settings.node_dir()).as_posix()
                   for p in (player.settings.node_dir() / "selfplay").rglob("*.jsonl"))
    assert games and not (trainer.settings.node_dir() / "selfplay").exists()

    started = _ask(leader, "/training/start", {"board_type": BOARD, "node_id": trainer.node_id, "steps": 6,
                                               "batch_size": 16, "window_games": 12, "report_every": 3})
    assert started.status_code == 200, started.text
    run_id, model_id = started.json()["run_id"], started.json()["model_id"]
    # The window is on the training node before its job starts: the leader's sync, waited for.
    run = trainer.get("/training/status", params={"run_id": run_id}).json()["run"]
    sync = run["data_sync"]
    assert sync["sync_id"] == f"{run_id}:data" and sync["files_total"] == sync["files_done"] == len(games), run
    assert sorted(t["path"] for t in _transfers(trainer, sync["sync_id"])) == games
    assert {(t["source_node"], t["priority"]) for t in _transfers(trainer, sync["sync_id"])} == {
        (player.node_id, PRIORITY_TRAINING)}
    # ...the same planned sync POST /sync/training makes: recorded by the leader, shown in /sync/status
    status = wait_until(lambda: (s := player.get("/sync/status", params={"sync_id": sync["sync_id"]}).json()["sync"])
                        ["state"] != "running" and s, timeout_s=60, what="the training sync reported")
    assert status["state"] == "done" and status["request"]["target_nodes"] == [trainer.node_id], status
    assert status["request"]["patterns"] == [f"selfplay/{BOARD}/**", f"training/{BOARD}/**"]

    job = _job_done(trainer, run_id)
    assert job["state"] == "completed", job["error"]
    assert job["result"]["gathered"]["files_fetched"] == 0  # nothing left for the job's own gather to copy
    model = wait_until(lambda: next((m for m in leader.get("/models").json()["models"] if m["model_id"] == model_id),
                                    None), timeout_s=60, what="the model registered")
    files = model["data_window"]["files"]
    assert files and {f["path"] for f in files} <= set(games)
    assert {f["node_id"] for f in files} == {player.node_id}  # the lineage names the node the files came from

    # The same body again is the same run; /sync/training for a window already there moves nothing.
    again = _ask(leader, "/training/start", {"board_type": BOARD, "node_id": trainer.node_id, "steps": 6,
                                             "batch_size": 16, "window_games": 12, "report_every": 3,
                                             "run_id": run_id})
    assert again.status_code == 200 and again.json()["created"] is False, again.text
    nothing = _ask(player, "/sync/training", {"board_type": BOARD, "node_id": trainer.node_id})
    assert nothing.status_code == 200 and nothing.json()["files_total"] == 0, nothing.text

    # A window file that does not arrive (its bytes rotted at the source after its digest was taken)
    # fails the start naming it; the run keeps why, and the same request again plans a fresh copy.
    rotten = player.settings.node_dir() / f"selfplay/{BOARD}/rot/games.jsonl"
    rotten.parent.mkdir(parents=True)
    rotten.write_bytes(b"x" * 4096)
    assert player.post("/refresh_manifest").status_code == 200
    stat = rotten.stat()
    rotten.write_bytes(b"y" * 4096)
    os.utime(rotten, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: the cached digest stays
    body = {"board_type": BOARD, "node_id": trainer.node_id, "steps": 2, "batch_size": 16, "window_games": 12,
            "run_id": "rot-run"}
    failed = leader.post("/training/start", json=body)
    assert failed.status_code == 503 and f"selfplay/{BOARD}/rot/games.jsonl" in failed.json()["error"], failed.text
    assert "sha256 mismatch" in failed.json()["error"]
    run = leader.get("/training/status", params={"run_id": "rot-run"}).json()["run"]
    assert "did not reach" in run["start_error"] and run["job"] is None, run  # no job was started
    rotten.unlink()
    assert player.post("/refresh_manifest").status_code == 200
    retried = leader.post("/training/start", json=body)
    assert retried.status_code == 200 and retried.json()["created"] is True, retried.text
    run = leader.get("/training/status", params={"run_id": "rot-run"}).json()["run"]
    assert run["data_sync"]["sync_id"] == "rot-run:data-2" and run["data_sync"]["files_total"] == 0
    assert "start_error" not in run and run["start_tries"] == 2
