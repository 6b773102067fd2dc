"""Data sync on real nodes (own data dirs, real gateways, real Ray actors): a pull, a planned sync
that copies only what differs, a resumed partial, a corrupted copy replaced, a source that changed
under a sync reported, path-escape attempts refused, and the disk limit."""
import hashlib
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import ray

from actors.naming import CLUSTER_STORE, lookup
from actors.sync import HOLDERS_KIND, JOB_PREFIX
from orchestrator.store import NodeStore, node_db_path
from orchestrator.sync.plan import PRIORITY_MODEL
from tests.harness import wait_until

LEASE_TTL_S = 8.0
# Slow node starts on a loaded box must not get a peer retired (sticky) before it ever joined.
PATIENT = dict(lease_ttl_s=LEASE_TTL_S, peer_timeout_s=5.0, dead_after_s=60.0, retire_after_s=600.0,
               actor_call_timeout_s=60.0)
MIB = 1 << 20


def _write(node, relative, data: bytes, mtime=None):
    path = node.settings.node_dir() / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _trio(gateways):
    voters = ["sy-a", "sy-b", "sy-c"]
    nodes = [gateways.start(name, gateways.ray_node_id(i), voters=voters, **PATIENT)
             for i, name in enumerate(voters)]
    seen = []

    def formed():
        seen[:] = [(v["node_id"], v["leader_id"], sorted((p["node_id"], p["state"]) for p in v["peers"]))
                   for v in (n.status() for n in nodes)]
        leaders = {leader for _, leader, _ in seen}
        return len(leaders) == 1 and None not in leaders and all(
            sum(state == "alive" for _, state in peers) == 3 for _, _, peers in seen)
    try:
        wait_until(formed, timeout_s=90, what="a leader and three alive peers")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; views: {seen}") from None
    return nodes


def _ask(node, path, body):
    """A leader-only call, retried while no leader is known (a lease can lapse on a busy box)."""
    answers = []
    wait_until(lambda: answers.append(node.post(path, json=body)) or answers[-1].status_code != 503, timeout_s=30,
               what=f"{path} answered")
    return answers[-1]


def _finished(node, sync_id):
    return wait_until(lambda: (s := node.get("/sync/status", params={"sync_id": sync_id}).json()["sync"])["state"]
                      != "running" and s, timeout_s=60, what=f"{sync_id} finished")


def test_pull_and_file_serving_refuse_escapes_a_full_target_answers_507_a_killed_transfer_resumes(gateways):
    voters = ["sy-d", "sy-e"]
    node = gateways.start("sy-d", gateways.ray_node_id(0), voters=voters, **PATIENT)
    full = gateways.start("sy-e", gateways.ray_node_id(1), voters=voters, **PATIENT,
                          sync_disk_limit_percent=0.001)
    game = os.urandom(3 * MIB + 17)
    _write(node, "selfplay/tic_tac_toe/j1/games-0-0.jsonl", game, mtime=2_000_000_000)
    _write(node, "selfplay/tic_tac_toe/j1/old.jsonl", b"old\n", mtime=1_000_000_000)
    _write(node, "models/m1.pt", b"weights")
    secret = node.settings.node_dir().parent / "secret.txt"
    secret.write_bytes(b"TOP-SECRET")
    os.symlink(secret, node.settings.node_dir() / "selfplay" / "tic_tac_toe" / "j1" / "link.jsonl")

    manifest = node.post("/refresh_manifest").json()
    assert {f["path"] for f in manifest["files"]} == {"selfplay/tic_tac_toe/j1/games-0-0.jsonl",
                                                       "selfplay/tic_tac_toe/j1/old.jsonl", "models/m1.pt"}
    assert node.get("/data_manifest", params={"kind": "model"}).json()["file_count"] == 1
    assert node.get("/data_manifest", params={"kind": "bogus"}).json()["field"] == "kind"

    pulled = node.post("/sync/pull", json={"patterns": ["selfplay/*/*/*.jsonl"], "since_timestamp": 1_500_000_000})
    assert pulled.status_code == 200, pulled.text
    [entry] = pulled.json()["files"]
    assert entry["path"] == "selfplay/tic_tac_toe/j1/games-0-0.jsonl" and entry["sha256"] == _sha(game)
    whole = node.get(entry["url"][len(node.url):])
    assert whole.status_code == 200 and whole.content == game
    assert whole.headers["ETag"] == f'"{_sha(game)}"' and int(whole.headers["Content-Length"]) == len(game)
    part = node.get(entry["url"][len(node.url):], headers={"Range": "bytes=1000-"})
    assert part.status_code == 206 and part.content == game[1000:]
    assert part.headers["Content-Range"] == f"bytes 1000-{len(game) - 1}/{len(game)}"
    assert node.get(entry["url"][len(node.url):], headers={"Range": f"bytes={len(game)}-"}).status_code == 416

    for bad in ("../secret.txt", "/etc/passwd", str(secret), "selfplay/../../secret.txt", "a\x00b"):
        answer = node.get("/sync/file", params={"path": bad})
        assert answer.status_code == 400 and b"TOP-SECRET" not in answer.content, (bad, answer.text)
        assert answer.json()["field"] == "path"
    for hidden in ("selfplay/tic_tac_toe/j1/link.jsonl", "state/node.db", "selfplay/tic_tac_toe/j1/none.jsonl"):
        answer = node.get(f"/sync/file?path={quote(hidden)}")
        assert answer.status_code in (400, 404) and b"TOP-SECRET" not in answer.content, (hidden, answer.text)
    escaping = node.post("/sync/pull", json={"patterns": ["../*"]})
    assert escaping.status_code == 400 and escaping.json()["field"] == "patterns"
    unknown = node.post("/sync/pull", json={"patterns": ["models/*"], "since": 3})
    assert unknown.status_code == 400 and "since" in unknown.json()["error"]

    wait_until(lambda: node.status()["leader_id"] and node.status()["leader_id"] == full.status()["leader_id"]
               and sum(p["state"] == "alive" for p in node.status()["peers"]) == 2, timeout_s=40, what="a leader")
    refused = _ask(node, "/sync/start", {"patterns": ["models/*"], "target_nodes": ["sy-e"]})
    assert refused.status_code == 507 and refused.json()["code"] == 507, refused.text
    assert not (full.settings.node_dir() / "models/m1.pt").exists()

    _killed_half_way_and_resumed_after_a_restart(node)


class _StallingSource(BaseHTTPRequestHandler):
    """A peer that sends half of the file and then stalls (its process hung), until told to recover."""
    data = b""
    recovered = threading.Event()

    def do_GET(self):
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if "Range" in self.headers else 0
        body = self.data[start:]
        self.send_response(206 if start else 200)
        self.send_header("ETag", f'"{_sha(self.data)}"')
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(self.data) - 1}/{len(self.data)}")
        self.end_headers()
        if self.recovered.is_set():
            self.wfile.write(body)
            return
        self.wfile.write(body[:len(body) // 2])
        self.wfile.flush()
        self.recovered.wait(120)

    def log_message(self, *args):
        pass


def _killed_half_way_and_resumed_after_a_restart(node):
    """The target's SyncActor is SIGKILLed while a file is half received; Ray restarts it, it finds its
    job in the node's database and resumes the file from the partial with a Range request."""
    data = os.urandom(4 * MIB)
    _StallingSource.data = data
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StallingSource)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path = "selfplay/b/j/stalled.jsonl"
        transfer = {"path": path, "sha256": _sha(data), "size": len(data), "source_node": "stalling", "target_node":
                    node.node_id, "priority": 2}
        ray.get(node.actors.sync.start_sync.remote("sync-killed", [transfer],
                                                   {"stalling": f"http://127.0.0.1:{server.server_port}"}, False))
        partial = node.settings.node_dir() / "selfplay/b/j" / f".stalled.jsonl.{_sha(data)[:16]}.partial"
        wait_until(lambda: partial.exists() and partial.stat().st_size == len(data) // 2, timeout_s=30,
                   what="half the file received")
        ray.kill(node.actors.sync, no_restart=False)
        _StallingSource.recovered.set()
        status = wait_until(lambda: (s := _sync_status(node, "sync-killed")) and s["done"] and s, timeout_s=60,
                            what="the resumed transfer finished")
        assert status["files_done"] == 1 and status["errors"] == [] and status["bytes_resumed"] == len(data) // 2
        assert (node.settings.node_dir() / path).read_bytes() == data and not partial.exists()
    finally:
        server.shutdown()


def _sync_status(node, sync_id):
    try:
        return ray.get(node.actors.sync.status.remote(sync_id), timeout=10)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None  # restarting


def test_planned_sync_copies_only_what_differs_resumes_and_replaces_corrupt_copies(gateways):
    a, b, c = trio = _trio(gateways)
    shared = os.urandom(MIB)
    newest = os.urandom(2 * MIB)
    resumable = os.urandom(2 * MIB)
    for node in trio:
        _write(node, "selfplay/tic_tac_toe/j1/shared.jsonl", shared)
    _write(a, "selfplay/tic_tac_toe/j1/games.jsonl", newest, mtime=2_000_000_000)
    _write(b, "selfplay/tic_tac_toe/j1/games.jsonl", newest[:-1] + b"X", mtime=1_900_000_000)  # corrupt copy
    _write(a, "selfplay/tic_tac_toe/j2/big.jsonl", resumable)
    # what a transfer killed half-way leaves on c: the first 700 KiB under the partial name
    partial = c.settings.node_dir() / "selfplay/tic_tac_toe/j2" / f".big.jsonl.{_sha(resumable)[:16]}.partial"
    _write(c, partial.relative_to(c.settings.node_dir()).as_posix(), resumable[:700 * 1024])

    started = _ask(b, "/sync/start", {"patterns": ["selfplay/**"], "sync_id": "sync-one"})
    assert started.status_code == 200, started.text
    body = started.json()
    # games.jsonl to b (differs) and c (missing), big.jsonl to b and c; shared.jsonl nowhere
    assert (body["files_total"], body["skipped"]) == (4, 5)
    assert set(body["targets"]) == {"sy-b", "sy-c"}
    again = _ask(a, "/sync/start", {"patterns": ["selfplay/**"], "sync_id": "sync-one"})
    assert again.json()["created"] is False

    status = _finished(a, "sync-one")
    assert status["state"] == "done", status
    assert (status["files_done"], status["bytes_done"]) == (4, 2 * len(newest) + 2 * len(resumable))
    assert status["nodes"]["sy-c"]["bytes_resumed"] == 700 * 1024
    assert status["rate_bytes_per_s"] > 0 and status["eta_s"] == 0.0
    for node in (b, c):
        root = node.settings.node_dir()
        assert (root / "selfplay/tic_tac_toe/j1/games.jsonl").read_bytes() == newest
        assert (root / "selfplay/tic_tac_toe/j2/big.jsonl").read_bytes() == resumable
    assert not partial.exists()

    merged = wait_until(lambda: (m := c.get("/cluster_data_manifest")).status_code != 503 and m,
                        what="the cluster manifest")
    assert merged.status_code == 200 and merged.json()["differing"] == 0
    assert all(row["copies"] == 3 for row in merged.json()["files"])

    nothing = _ask(c, "/sync/start", {"patterns": ["selfplay/**"]}).json()
    assert nothing["files_total"] == 0 and nothing["skipped"] == 9

    # training data for one board goes to the training node only
    fresh = os.urandom(4096)
    _write(a, "selfplay/connect_four/j9/games.jsonl", fresh)
    training = _ask(c, "/sync/training", {"board_type": "connect_four", "node_id": "sy-b"})
    assert training.status_code == 200, training.text
    assert (training.json()["files_total"], list(training.json()["targets"])) == (1, ["sy-b"])
    assert _finished(a, training.json()["sync_id"])["state"] == "done"
    assert (b.settings.node_dir() / "selfplay/connect_four/j9/games.jsonl").read_bytes() == fresh
    assert not (c.settings.node_dir() / "selfplay/connect_four").exists()

    _bit_rot_at_the_source_is_detected_and_reported(a, b)
    _bad_requests(a)


def _bit_rot_at_the_source_is_detected_and_reported(a, b):
    """The source's bytes rot after its manifest hashed them (same size and mtime, so its digest cache
    still names the old sha256): the target's verification catches it, refetches once from a clean
    file, then reports, and its own copy stays as it was."""
    good = os.urandom(64 * 1024)
    path = _write(a, "models/net.pt", good)
    _write(b, "models/net.pt", b"older")
    assert a.post("/refresh_manifest").status_code == 200
    stat = path.stat()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    started = _ask(a, "/sync/start", {"patterns": ["models/*"], "source_node": "sy-a", "target_nodes": ["sy-b"]})
    assert started.status_code == 200 and started.json()["files_total"] == 1, started.text
    status = _finished(a, started.json()["sync_id"])
    assert status["state"] == "failed" and len(status["errors"]) == 1, status
    assert "sha256 mismatch" in status["errors"][0]["error"] and status["errors"][0]["node_id"] == "sy-b"
    assert (b.settings.node_dir() / "models/net.pt").read_bytes() == b"older"


def _bad_requests(a):
    assert _ask(a, "/sync/start", {"patterns": ["/etc/*"]}).status_code == 400
    assert _ask(a, "/sync/start", {"patterns": ["x"], "target_nodes": ["nobody"]}).status_code == 404
    assert _ask(a, "/sync/start", {"patterns": ["x"], "bogus": 1}).status_code == 400
    assert _ask(a, "/sync/start", {"patterns": ["x"], "target_nodes": ["a b"]}).json()["field"] == "target_nodes.0"
    nan = a.post("/sync/pull", data='{"patterns": ["x"], "since_timestamp": NaN}',
                 headers={"Content-Type": "application/json"})
    assert nan.status_code == 400 and nan.json()["field"] == "since_timestamp"
    assert a.get("/sync/status", params={"sync_id": "sync-none"}).status_code == 404
    update = {"sync_id": "sync-none", "node_id": "sy-a", "files_done": 1, "bytes_done": 2**64}
    answer = _ask(a, "/sync/job_update", update)
    assert answer.status_code == 400 and answer.json()["field"] == "bytes_done"
    assert _ask(a, "/sync/job_update", {**update, "bytes_done": 1}).status_code == 404
    # Training data goes only to a node that is known and alive (the checks training itself makes).
    def recorded():
        return sorted(view["sync_id"] for view in a.get("/sync/status").json()["syncs"])

    syncs = recorded()
    unknown = _ask(a, "/sync/training", {"board_type": "connect_four", "node_id": "nobody"})
    assert unknown.status_code == 404 and unknown.json()["node_id"] == "nobody"
    assert recorded() == syncs


BOARD = "tic_tac_toe"


def _job_done(node, job_id, timeout_s=120):
    return wait_until(lambda: (j := node.job(job_id))["state"] in ("completed", "failed") and j, timeout_s=timeout_s,
                      what=f"{job_id} finished")


def _selfplay(node, job_id, **config):
    body = {"job_id": job_id, "job_type": "selfplay", "config": {"board_type": BOARD, "parallel_games": 8, **config}}
    answer = node.post("/start_job", json=body)
    assert answer.status_code == 200, answer.text
    return _job_done(node, job_id)


def test_selfplay_on_two_nodes_trains_on_the_third_and_the_model_plays_everywhere(gateways):
    nodes = _trio(gateways)
    leader_id = nodes[0].status()["leader_id"]
    trainer = next(n for n in nodes if n.node_id == leader_id)  # the leader: its own commands need no fencing hop
    players = [n for n in nodes if n is not trainer]
    for player in players:
        job = _selfplay(player, f"games-{player.node_id}", agent="random", num_games=12)
        assert job["state"] == "completed", job["error"]
    assert not (trainer.settings.node_dir() / "selfplay").exists()

    started = _ask(trainer, "/training/start", {"board_type": BOARD, "node_id": trainer.node_id, "steps": 10,
                                                "batch_size": 16, "window_games": 24, "report_every": 5})
    assert started.status_code == 200, started.text
    run_id, model_id = started.json()["run_id"], started.json()["model_id"]
    job = _job_done(trainer, run_id)
    assert job["state"] == "completed", job["error"]
    synced = trainer.get("/training/status", params={"run_id": run_id}).json()["run"]["data_sync"]
    assert synced["files_done"] == synced["files_total"] > 0  # the leader moved the window before the job started
    gathered = job["result"]["gathered"]
    assert gathered["files_fetched"] == 0 and not gathered["errors"]
    model = wait_until(lambda: next((m for m in trainer.get("/models").json()["models"] if m["model_id"] == model_id),
                                    None), timeout_s=60, what="the model registered")
    assert model["data_window"]["game_count"] == 24
    # the registered lineage names each file and the node it came from: the two self-play nodes
    assert {f["node_id"] for f in model["data_window"]["files"]} == {p.node_id for p in players}
    assert all(f"/games-{f['node_id']}/" in f"/{f['path']}" for f in model["data_window"]["files"])

    # a node that lacks the model fetches it (verified) before it plays
    first = players[0]
    played = _selfplay(first, "model-games-0", agent=f"model:{model_id}+mcts_4", num_games=2)
    assert played["state"] == "completed", played["error"]
    held = first.settings.node_dir() / model["path"]
    assert hashlib.sha256(held.read_bytes()).hexdigest() == model["sha256"]
    holders = ray.get(lookup(CLUSTER_STORE).list.remote(HOLDERS_KIND))
    assert holders[f"{model_id}@{first.node_id}"]["sha256"] == model["sha256"]
    # the new model pushed to every alive node ahead of other work
    pushed = _ask(trainer, "/sync/model", {"model_id": model_id})
    assert pushed.status_code == 200 and pushed.json()["failed"] == [], pushed.text
    assert pushed.json()["nodes"][players[1].node_id]["fetched"] is True
    store = NodeStore(node_db_path(players[1].settings.node_dir()))
    try:  # it came through that node's transfer queue, as a top-priority entry
        queued = [job["transfers"] for key, job in store.load("kv").items() if key.startswith(JOB_PREFIX + "model-")]
    finally:
        store.close()
    assert [[(t["path"], t["priority"]) for t in q] for q in queued] == [[(model["path"], PRIORITY_MODEL)]]
    for node in nodes:
        assert hashlib.sha256((node.settings.node_dir() / model["path"]).read_bytes()).hexdigest() == model["sha256"]
    others = [players[1], trainer]
    for node in others:
        body = {"job_id": f"model-games-{node.node_id}", "job_type": "selfplay",
                "config": {"board_type": BOARD, "agent": f"model:{model_id}+mcts_4", "num_games": 2}}
        assert node.post("/start_job", json=body).status_code == 200
    for node in others:
        assert _job_done(node, f"model-games-{node.node_id}")["state"] == "completed"

    # a job that cannot get its model fails naming it
    for node in nodes:
        (node.settings.node_dir() / model["path"]).unlink()
    failed = _selfplay(players[1], "model-games-gone", agent=f"model:{model_id}+mcts_4", num_games=2)
    assert failed["state"] == "failed" and model_id in failed["error"] and "no alive node holds" in failed["error"]
