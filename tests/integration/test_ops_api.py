"""Git, registry and connectivity endpoints on real gateways over a real Ray cluster.

The git remote is a local bare repository; each node deploys its own clone. Provider CLIs are
stand-in executables configured exactly as a real `vastai` would be (the seam is the configured
command), printing the documented format; provider HTTP APIs are a loopback HTTP server answering
in the API's documented format (the seam is the configured base URL).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from orchestrator.cluster.supervisor import TABLE
from orchestrator.store import NodeStore, node_db_path
from tests.harness import GatewayHarness, free_port, wait_until
from tests.harness import TestNode as HarnessNode  # aliased: pytest would try to collect a Test* class
from tests.unit.test_git_ops import commit, deployed, git, make_origin
from tests.unit.test_provider_api import FakeProvider

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "registry"
ROOT = Path(__file__).resolve().parents[2]
# Nothing here is about failure detection: peers stay alive through a loaded machine's pauses.
TOLERANT_TIMINGS = dict(heartbeat_interval_s=0.5, peer_timeout_s=10.0, dead_after_s=30.0, retire_after_s=60.0)
# How long the leader waits for an updated node to be back: a launcher's restart on a loaded machine fits;
# the node that never comes back costs the test this much.
ROLLOUT_HEALTH_TIMEOUT_S = 90.0


@dataclass
class OpsCluster:
    harness: GatewayHarness
    leader: HarnessNode
    follower: HarnessNode
    author: Path  # a clone that pushes to the bare remote both nodes deploy from
    registry_yaml: Path  # the follower's
    vast_output: Path  # what the follower's stand-in `vastai` prints
    tailscale_api: FakeProvider  # both nodes' Tailscale API, on loopback


@pytest.fixture(scope="module")
def ops(ray_cluster, tmp_path_factory):
    """Two nodes, each deploying its own clone; started once for this module's tests."""
    tmp_path = tmp_path_factory.mktemp("ops")
    remote, author = make_origin(tmp_path)
    registry_yaml = tmp_path / "conf" / "registry.yaml"
    registry_yaml.parent.mkdir()
    registry_yaml.write_text((FIXTURES / "static_registry.yaml").read_text())
    tool, vast_output = _vast_tool(tmp_path)
    tailscale_api = FakeProvider()
    key_file = tmp_path / "tailscale_api_key"
    key_file.write_text("tskey-api-ops\n")
    harness = GatewayHarness(ray_cluster, tmp_path)
    voters = ["ops-a", "ops-b"]
    try:
        a, b = (harness.start(name, harness.ray_node_id(i), voters=voters, git_repo_dir=deployed(tmp_path, remote, name),
                              git_timeout_s=20.0, git_rollout_health_timeout_s=ROLLOUT_HEALTH_TIMEOUT_S,
                              registry_yaml=registry_yaml, vast_cli=tool, tailscale_api_key_file=key_file,
                              tailscale_api_url=f"{tailscale_api.url}/api/v2", **TOLERANT_TIMINGS)
                for i, name in enumerate(voters))
        leader = wait_until(lambda: a.status()["leader_id"] == b.status()["leader_id"] and a.status()["leader_id"],
                            timeout_s=60, what="a leader")
        wait_until(lambda: all(n.peer_state(m.node_id) == "alive" for n in (a, b) for m in (a, b)), timeout_s=60,
                   what="peers alive")
        leader, follower = (a, b) if leader == a.node_id else (b, a)
        yield OpsCluster(harness, leader, follower, author, registry_yaml, vast_output, tailscale_api)
    finally:
        harness.close()
        tailscale_api.close()


def test_git_status_update_and_the_cluster_update(ops):
    leader, follower, author = ops.leader, ops.follower, ops.author
    v1 = git(author, "rev-parse", "HEAD")

    status = follower.get("/git/status").json()
    assert (status["branch"], status["commit"], status["dirty"], status["behind"], status["ahead"]) == ("main", v1, False,
                                                                                                      0, 0)
    v2 = commit(author, "app.py", "v2\n")
    git(author, "push", "-q", "origin", "main")
    assert follower.get("/git/status").json()["behind"] == 1

    for ref in ("--upload-pack=touch pwned", "main;id", "$(id)", "-x", "main..x"):
        refused = follower.post("/git/update", json={"ref": ref})
        assert refused.status_code == 400 and refused.json()["field"] == "ref", ref
    assert follower.post("/git/update", json={"ref": "main", "path": "/etc"}).json()["field"] == "path"
    assert follower.post("/git/update", json={"ref": "nope"}).status_code == 404

    checkout = Path(follower.settings.git_repo_dir)
    (checkout / "app.py").write_text("hand edit\n")
    dirty = follower.post("/git/update", json={})
    assert dirty.status_code == 409 and dirty.json()["status"] == "error"
    git(checkout, "checkout", "-q", "--", "app.py")

    updated = follower.post("/git/update", json={}).json()
    assert updated == {**updated, "status": "success", "previous_commit": v1, "current_commit": v2, "updated": True,
                       "restarting": False}, "no launcher in the test process: it says so rather than pretend"

    # the cluster update, asked of the follower: forwarded, every node, the leader last
    v3 = commit(author, "app.py", "v3\n")
    git(author, "push", "-q", "origin", "main")
    # a 503 while leadership settles is retried; the answer comes once the follower is back (up to the health timeout)
    answer = follower.post_to_leader("/api/cluster/git/update", answer_timeout_s=3 * ROLLOUT_HEALTH_TIMEOUT_S)
    assert answer.status_code == 200 and answer.headers["X-P2P-Leader"] == leader.node_id
    report = answer.json()
    assert [n["node_id"] for n in report["nodes"]] == [follower.node_id, leader.node_id], json.dumps(report, indent=1)
    assert [(n.get("previous_commit"), n.get("current_commit")) for n in report["nodes"]] == [(v2, v3), (v1, v3)], report
    assert (report["status"], report["updated_count"], report["failed_count"]) == ("success", 2, 0)
    assert (report["stopped_at"], report["untouched"]) == (None, [])
    waited, last = report["nodes"]
    assert waited["healthy_after_s"] >= 0 and waited["error"] is None, "the follower was seen back before the leader moved"
    assert last["healthy_after_s"] is None, "the leader cannot watch itself come back"
    assert leader.post("/api/cluster/git/update", json={"ref": "$(id)"}).status_code == 400


def test_the_cluster_update_waits_for_each_restart_and_stops_where_a_node_does_not_come_back(ops, ray_cluster):
    """A third node runs the documented launcher from its own checkout (a repo holding that launcher),
    so an update really re-executes it from the new commit. A good commit: the leader waits until it
    is back (a new process, /health ok, on the new commit) before touching the next node. Then a commit
    whose launcher cannot start (it imports a module that does not exist): the process exits, the node
    never answers again, and the rollout stops there with the other nodes left on their old commit."""
    leader, follower, tmp_path = ops.leader, ops.follower, ops.harness.tmp_path
    remote = tmp_path / "launcher.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    author = tmp_path / "launcher-author"
    git(tmp_path, "clone", "-q", str(remote), str(author))
    git(author, "checkout", "-q", "-b", "main")
    (author / "scripts").mkdir()
    launcher = (ROOT / "scripts" / "p2p_orchestrator.py").read_text()
    commit(author, "scripts/p2p_orchestrator.py", launcher)
    git(author, "push", "-q", "origin", "main")
    checkout = deployed(tmp_path, remote, "launched-checkout")
    port = free_port()
    log = (tmp_path / "launched.log").open("wb")  # what the launcher said, for a failure's report
    env = {**os.environ, "P2P_PORT": str(port), "P2P_NODE_ID": "ops-0-launched", "P2P_HOST": "127.0.0.1",
           "P2P_ADVERTISE_HOST": "127.0.0.1",
           "P2P_DATA_DIR": str(tmp_path / "launched-data"), "P2P_GIT_REPO_DIR": str(checkout),
           "P2P_VOTERS": json.dumps(["ops-a", "ops-b"]),
           **{f"P2P_{name.upper()}": str(value) for name, value in TOLERANT_TIMINGS.items()}}
    process = subprocess.Popen([sys.executable, str(checkout / "scripts" / "p2p_orchestrator.py"), "--ray-address",
                                ray_cluster.address, "--ray-node-ip", "127.0.0.4"], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _json_or_none(f"{url}/health").get("status") == "ok", timeout_s=120,
                   what="the launched node healthy")
        wait_until(lambda: leader.peer_state("ops-0-launched") == "alive", timeout_s=60, what="the leader seeing it")

        good = commit(author, "scripts/p2p_orchestrator.py", launcher + "# a release that starts\n")
        git(author, "push", "-q", "origin", "main")
        asked_at = time.monotonic()
        report = _cluster_update(leader)
        assert report["status"] == "success", json.dumps(report, indent=1)
        launched, *rest = report["nodes"]
        assert [n["node_id"] for n in rest] == [follower.node_id, leader.node_id]
        assert (launched["node_id"], launched["current_commit"], launched["restarting"]) == ("ops-0-launched", good, True)
        assert launched["healthy_after_s"] > 0 and launched["error"] is None
        assert _json_or_none(f"{url}/health")["uptime_seconds"] < time.monotonic() - asked_at, "a new process"
        assert process.poll() is None, "re-executed in place"

        before = {n.node_id: n.get("/git/status").json()["commit"] for n in (follower, leader)}
        commit(ops.author, "app.py", "v4\n")
        git(ops.author, "push", "-q", "origin", "main")
        broken = commit(author, "scripts/p2p_orchestrator.py",
                        launcher.replace("from orchestrator.cli import main", "from orchestrator.no_such_module import main"))
        git(author, "push", "-q", "origin", "main")
        report = _cluster_update(leader)
        assert (report["status"], report["stopped_at"], report["untouched"]) == \
            ("stopped", "ops-0-launched", [follower.node_id, leader.node_id]), json.dumps(report, indent=1)
        (failed,) = report["nodes"]
        assert (failed["previous_commit"], failed["current_commit"], failed["healthy_after_s"]) == (good, broken, None)
        assert failed["error"].startswith(f"did not come back healthy within {ROLLOUT_HEALTH_TIMEOUT_S:g}s"), failed
        assert "/health does not answer" in failed["error"]
        assert process.wait(30) != 0, "the new code really could not start"
        after = {n.node_id: n.get("/git/status").json() for n in (follower, leader)}
        assert {k: (v["commit"], v["behind"]) for k, v in after.items()} == {k: (c, 1) for k, c in before.items()}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def _json_or_none(url: str) -> dict:
    try:
        return requests.get(url, timeout=5).json()
    except (requests.RequestException, ValueError):
        return {}


def _cluster_update(leader: HarnessNode) -> dict:
    """Asked of the leader with room for the health waits (the harness client gives up after 30 s);
    retried only while no leader answers, which is before any node is touched."""
    timeout_s = 2 * ROLLOUT_HEALTH_TIMEOUT_S + 120
    answers: list[requests.Response] = []

    def answered() -> bool:
        answers.append(requests.post(f"{leader.url}/api/cluster/git/update", json={}, timeout=timeout_s))
        last = answers[-1]
        return not (last.status_code == 503 or last.status_code == 409 and "not the leader" in last.text)
    wait_until(answered, timeout_s=timeout_s, interval_s=0.5, what="the cluster update answered")
    assert answers[-1].status_code == 200, answers[-1].text
    return answers[-1].json()


def test_registry_refresh_save_and_probe(ops):
    node = ops.follower
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    ops.vast_output.write_text(_vast_instances(node.settings.port, closed_port))

    missing = node.post("/registry/update_aws")
    assert missing.status_code == 503 and "aws_cli" in missing.json()["error"]
    assert node.post("/registry/update_vast", json={"argv": ["id"]}).json()["field"] == "argv"
    refreshed = node.post("/registry/update_vast").json()
    assert refreshed["host_count"] == 2 and refreshed["hosts"][0]["address"] == "127.0.0.1"

    providers = node.get("/registry/status").json()["providers"]
    assert [h["host_id"] for h in providers["static"]["hosts"]] == ["lab-box-1", "lab-box-2"], "read from the YAML"
    assert providers["vast"]["refreshed_at"] and providers["aws"]["last_error"].startswith("AWS is not configured")
    assert sum(h["state"] == "alive" for h in providers["ray_cluster"]["hosts"]) >= 3

    # Tailscale through its HTTP API (configured, so used instead of a CLI): the key arrives as documented;
    # an error answer becomes the provider's last error and its hosts stay as they were
    ops.tailscale_api.routes["/api/v2/tailnet/-/devices"] = (200, (FIXTURES / "tailscale_api_devices.json").read_text())
    devices = node.post("/registry/update_tailscale").json()
    assert (devices["host_count"], devices["hosts"][0]["address"]) == (2, "100.71.74.78")
    assert ops.tailscale_api.requests[-1]["headers"]["Authorization"] == "Bearer tskey-api-ops"
    ops.tailscale_api.routes["/api/v2/tailnet/-/devices"] = (500, "upstream trouble")
    failed = node.post("/registry/update_tailscale")
    assert failed.status_code == 503 and failed.json()["error"] == "Tailscale: the API answered 500: upstream trouble"
    tailscale = node.get("/registry/status").json()["providers"]["tailscale"]
    assert (tailscale["host_count"], tailscale["last_error"]) == (2, failed.json()["error"])

    probe = node.post("/connectivity/probe_vast", json={"timeout_s": 5}).json()
    by_service = {r["service"]: r for r in probe["results"]}
    assert by_service["gateway"]["tcp"]["ok"] and by_service["gateway"]["health"]["answer"]["node_id"] == node.node_id
    assert not by_service["ssh"]["tcp"]["ok"] and probe["unprobed"] == ["vast-7835611"]
    assert node.post("/connectivity/probe_vast", json={"address": "10.0.0.1"}).json()["field"] == "address"
    assert node.post("/connectivity/probe_vast", json={"host_ids": ["10.0.0.1"]}).status_code == 404

    assert node.post("/registry/save_yaml", json={"path": "/tmp/elsewhere.yaml"}).status_code == 400
    saved = node.post("/registry/save_yaml").json()
    assert saved["path"] == str(ops.registry_yaml) and not list(ops.registry_yaml.parent.glob("*.tmp"))
    assert len(yaml.safe_load(ops.registry_yaml.read_text())["providers"]["vast"]["hosts"]) == 2
    paths = node.get("/openapi.json").json()["paths"]
    assert {"/git/status", "/git/update", "/api/cluster/git/update", "/registry/save_yaml",
            "/connectivity/diagnose/{node_id}", "/connectivity/probe_vast"} <= set(paths)


def test_transport_stats_and_diagnose_of_a_live_and_a_stopped_gateway(ops):
    """Last in this module: it stops the leader's gateway."""
    leader, follower = ops.leader, ops.follower
    assert follower.post("/api/cluster/git/update", json={"ref": "$(id)"}).status_code == 400  # checked here, not sent
    assert follower.post("/api/cluster/git/update").status_code == 200  # forwarded to the leader

    # the forwarded calls were counted by the follower's client, under the leader's node id
    stats = follower.get("/connectivity/transport_stats").json()["peers"]
    to_leader = next(p for p in stats if p["node_id"] == leader.node_id)
    assert to_leader["requests"] >= 1 and to_leader["bytes"] > 0 and to_leader["p50_latency_ms"] > 0

    live = follower.get(f"/connectivity/diagnose/{leader.node_id}").json()
    assert live["reachable"] and live["tcp"]["ok"] and live["health"]["answer"]["node_id"] == leader.node_id
    assert live["ray"]["alive"] is True and live["heartbeat"]["state"] == "alive"
    assert live["address"]["addresses"] == ["127.0.0.1"]
    assert follower.get("/connectivity/diagnose/ghost").status_code == 404

    ops.harness.stop_gateway(leader.node_id)
    dead = follower.get(f"/connectivity/diagnose/{leader.node_id}").json()
    assert not dead["reachable"] and not dead["tcp"]["ok"] and dead["health"]["ok"] is False
    assert "gateway is down or blocked" in dead["summary"], "Ray still sees the node: only its gateway is gone"
    errors = next(p for p in follower.get("/connectivity/transport_stats").json()["peers"]
                  if p["node_id"] == leader.node_id)["errors"]
    assert errors >= 1, "the failed /health call of the diagnosis counts as an error"


def _vast_tool(tmp_path: Path) -> tuple[str, Path]:
    """A stand-in `vastai` that prints what the test puts in its output file, given the documented arguments."""
    output = tmp_path / "vast.json"
    tool = tmp_path / "vastai"
    tool.write_text(f'#!/bin/sh\n[ "$*" = "show instances --raw" ] || exit 9\ncat {output}\n')
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return str(tool), output


def _vast_instances(gateway_port: int, closed_port: int) -> str:
    instances = json.loads((FIXTURES / "vast_show_instances.json").read_text())
    # the instance's gateway listens on the configured port, which Vast.ai maps to a port of the host
    instances[0].update(public_ipaddr="127.0.0.1", ports={
        f"{gateway_port}/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(gateway_port)}],
        "22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(closed_port)}]})
    return json.dumps(instances)


def test_the_launcher_restarts_its_node_after_an_update(ray_cluster, tmp_path):
    """The documented launcher: an update that moves HEAD answers first, then the same process
    (exec keeps the pid) drains, suspends its jobs between units, stops its actors and comes back
    serving with fresh actors, which resume the jobs."""
    remote, author = make_origin(tmp_path)
    checkout = deployed(tmp_path, remote)
    port = free_port()
    env = {**os.environ, "P2P_PORT": str(port), "P2P_NODE_ID": "restarting", "P2P_DATA_DIR": str(tmp_path / "data"),
           "P2P_AUTH_TOKEN": "tok", "P2P_HOST": "127.0.0.1", "P2P_GIT_REPO_DIR": str(checkout)}
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer tok"}
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "p2p_orchestrator.py"), "--ray-address",
                                ray_cluster.address, "--ray-node-ip", "127.0.0.3"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def health():
        try:
            return requests.get(f"{url}/health", timeout=2).json()
        except (requests.RequestException, ValueError):
            return None
    try:
        wait_until(health, timeout_s=90, what="the launcher serving")
        job = {"job_id": "across", "job_type": "benchmark",
               "config": {"duration_s": 3, "matrix_size": 64, "report_every_s": 0.2}}
        assert requests.post(f"{url}/start_job", json=job, headers=auth, timeout=30).status_code == 200

        def state():
            answer = requests.get(f"{url}/job/status", params={"job_id": "across"}, headers=auth, timeout=10)
            return answer.json()["job"] if answer.status_code == 200 else {}
        wait_until(lambda: state().get("state") == "running", timeout_s=60, what="the job running")
        v2 = commit(author, "app.py", "v2\n")
        git(author, "push", "-q", "origin", "main")
        updated = requests.post(f"{url}/git/update", headers=auth, timeout=60).json()
        asked_at = time.monotonic()
        assert updated["current_commit"] == v2 and updated["restarting"] is True
        wait_until(lambda: health() is None, timeout_s=30, what="the old process to stop serving")
        back = wait_until(health, timeout_s=90, what="the node serving again")
        assert back["uptime_seconds"] < time.monotonic() - asked_at and process.poll() is None, "re-executed in place"
        assert requests.get(f"{url}/git/status", headers=auth, timeout=30).json()["commit"] == v2
        resumed = wait_until(lambda: (j := state()).get("state") == "completed" and j, timeout_s=90, what="resumed")
        assert resumed["attempt"] == 2
        store = NodeStore(node_db_path(tmp_path / "data"))
        try:  # the first attempt stopped itself at a unit boundary: it was neither killed nor failed
            history = store.get(TABLE, "across")["history"]
        finally:
            store.close()
        assert [(h["from"], h["to"]) for h in history if h["attempt"] == 1][-3:] == \
            [("running", "stopping"), ("stopping", "stopped"), ("stopped", "pending")]
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
