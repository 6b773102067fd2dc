"""Git, registry and connectivity endpoints on real gateways over a real Ray cluster.

The git remote is a local bare repository; each node deploys its own clone. Provider CLIs are
stand-in executables configured exactly as a real `vastai` would be (the seam is the configured
command), printing the documented format.
"""
from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import yaml

from tests.harness import wait_until
from tests.unit.test_git_ops import commit, deployed, git, make_origin

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "registry"
# Nothing here is about failure detection: peers stay alive through a loaded machine's pauses.
TOLERANT_TIMINGS = dict(heartbeat_interval_s=0.5, peer_timeout_s=10.0, dead_after_s=30.0, retire_after_s=60.0)


def _pair(gateways, tmp_path, remote):
    voters = ["ops-a", "ops-b"]
    nodes = [gateways.start(name, gateways.ray_node_id(i), voters=voters, git_repo_dir=deployed(tmp_path, remote, name),
                            git_timeout_s=20.0, **TOLERANT_TIMINGS) for i, name in enumerate(voters)]
    a, b = nodes
    leader = wait_until(lambda: a.status()["leader_id"] == b.status()["leader_id"] and a.status()["leader_id"],
                        timeout_s=60, what="a leader")
    wait_until(lambda: all(n.peer_state(m.node_id) == "alive" for n in nodes for m in nodes), timeout_s=60,
               what="peers alive")
    return (a, b) if leader == a.node_id else (b, a)


def test_git_update_diagnose_and_transport_stats(gateways, tmp_path):
    remote, author = make_origin(tmp_path)
    leader, follower = _pair(gateways, tmp_path, remote)
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
    answer = follower.post("/api/cluster/git/update")
    assert answer.status_code == 200 and answer.headers["X-P2P-Leader"] == leader.node_id
    report = answer.json()
    assert [n["node_id"] for n in report["nodes"]] == [follower.node_id, leader.node_id]
    assert [(n["previous_commit"], n["current_commit"]) for n in report["nodes"]] == [(v2, v3), (v1, v3)]
    assert (report["status"], report["updated_count"], report["failed_count"]) == ("success", 2, 0)
    assert leader.post("/api/cluster/git/update", json={"ref": "$(id)"}).status_code == 400

    # the forwarded calls above were counted by the follower's client, under the leader's node id
    stats = follower.get("/connectivity/transport_stats").json()["peers"]
    to_leader = next(p for p in stats if p["node_id"] == leader.node_id)
    assert to_leader["requests"] >= 1 and to_leader["bytes"] > 0 and to_leader["p50_latency_ms"] > 0

    live = follower.get(f"/connectivity/diagnose/{leader.node_id}").json()
    assert live["reachable"] and live["tcp"]["ok"] and live["health"]["answer"]["node_id"] == leader.node_id
    assert live["ray"]["alive"] is True and live["heartbeat"]["state"] == "alive"
    assert live["address"]["addresses"] == ["127.0.0.1"]
    assert follower.get("/connectivity/diagnose/ghost").status_code == 404

    gateways.stop_gateway(leader.node_id)
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


def test_registry_refresh_save_reload_and_probe(gateways, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    registry_yaml = tmp_path / "conf" / "registry.yaml"
    registry_yaml.parent.mkdir()
    registry_yaml.write_text((FIXTURES / "static_registry.yaml").read_text())
    tool, output = _vast_tool(tmp_path)
    node = gateways.start("reg-a", gateways.ray_node_id(0), registry_yaml=registry_yaml, vast_cli=tool)
    output.write_text(_vast_instances(node.settings.port, closed_port))

    missing = node.post("/registry/update_tailscale")
    assert missing.status_code == 503 and "tailscale_cli" in missing.json()["error"]
    assert node.post("/registry/update_vast", json={"argv": ["id"]}).json()["field"] == "argv"
    refreshed = node.post("/registry/update_vast").json()
    assert refreshed["host_count"] == 2 and refreshed["hosts"][0]["address"] == "127.0.0.1"

    providers = node.get("/registry/status").json()["providers"]
    assert [h["host_id"] for h in providers["static"]["hosts"]] == ["lab-box-1", "lab-box-2"], "read at start"
    assert providers["vast"]["refreshed_at"] and providers["tailscale"]["last_error"].startswith("Tailscale")
    assert sum(h["state"] == "alive" for h in providers["ray"]["hosts"]) >= 3

    probe = node.post("/connectivity/probe_vast", json={"timeout_s": 5}).json()
    by_service = {r["service"]: r for r in probe["results"]}
    assert by_service["gateway"]["tcp"]["ok"] and by_service["gateway"]["health"]["answer"]["node_id"] == "reg-a"
    assert not by_service["ssh"]["tcp"]["ok"] and probe["unprobed"] == ["vast-7835611"]
    assert node.post("/connectivity/probe_vast", json={"address": "10.0.0.1"}).json()["field"] == "address"
    assert node.post("/connectivity/probe_vast", json={"host_ids": ["10.0.0.1"]}).status_code == 404

    assert node.post("/registry/save_yaml", json={"path": "/tmp/elsewhere.yaml"}).status_code == 400
    saved = node.post("/registry/save_yaml").json()
    assert saved["path"] == str(registry_yaml) and not list(registry_yaml.parent.glob("*.tmp"))
    assert len(yaml.safe_load(registry_yaml.read_text())["providers"]["vast"]["hosts"]) == 2

    again = gateways.start("reg-b", gateways.ray_node_id(1), registry_yaml=registry_yaml)
    assert again.get("/registry/status").json()["providers"]["vast"]["host_count"] == 2, "the saved file is read at start"
    paths = again.get("/openapi.json").json()["paths"]
    assert {"/git/status", "/git/update", "/api/cluster/git/update", "/registry/save_yaml",
            "/connectivity/diagnose/{node_id}", "/connectivity/probe_vast"} <= set(paths)
