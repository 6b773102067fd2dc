"""What a request must look like, over real HTTP on every declared endpoint: any body the JSON
parser rejects is a 400, a body is sent as application/json (415 otherwise) while no body is fine,
a browser's cross-site request never mutates (403), without a token a request addressed to another
host name (DNS rebinding) is refused (403), and the seed's curl examples work as written.
Also /health telling ok from degraded and unavailable by its rule."""
import json
import re
import socket
import subprocess

import pytest
import ray

from orchestrator.gateway.app import all_endpoints
from tests.harness import wait_until
from tests.unit.test_git_ops import deployed, make_origin

UNPARSEABLE = {
    "deep nesting": (b"[" * 100_000, "body"),
    "invalid UTF-8": (b'{"node_id": "\xff\xfe"}', "body"),
    "truncated": (b'{"node_id": ', "body"),
    "NaN": (b'{"node_id": "n", "x": NaN}', "x"),
    "overflowing float": (b'{"x": 1e999}', "x"),
    "integer past 64 bits": (b'{"epoch": 18446744073709551616}', "epoch"),
}
CROSS_SITE = [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}]
# The seed's "Example Usage", verbatim but for the address of the node under test (and curl's
# output flags, which change nothing that is sent).
SEED_BASE = "http://localhost:8770"
SEED_CURLS = {
    "health": "curl http://localhost:8770/health",
    "unretire": """curl -X POST http://localhost:8770/admin/unretire \\
  -H "Content-Type: application/json" \\
  -d '{"node_id": "vast-123456"}'""",
    "git update": "curl -X POST http://localhost:8770/api/cluster/git/update",
}


def _path(endpoint) -> str:
    return re.sub(r"\{[^}]+\}", "x", endpoint.path)


def _posts():
    return [e for e in all_endpoints() if "POST" in e.methods]


def _is_error(response, code):
    body = response.json()
    return response.status_code == code and body["status"] == "error" and body["code"] == code and body["error"]


@pytest.fixture
def node(gateways):
    return gateways.start("rules", gateways.ray_node_id(0))


def test_every_post_answers_an_unparseable_body_with_a_400(node):
    for endpoint in _posts():
        for what, (raw, field) in UNPARSEABLE.items():
            answer = node.post(_path(endpoint), data=raw, headers={"Content-Type": "application/json"})
            assert _is_error(answer, 400), (endpoint.path, what, answer.status_code, answer.text[:200])
            assert answer.json()["field"] == field, (endpoint.path, what, answer.text[:200])


def test_a_body_must_be_json_but_no_body_is_fine(node):
    for endpoint in _posts():
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            answer = node.post(_path(endpoint), data=b'{"node_id": "n"}', headers=headers)
            assert _is_error(answer, 415), (endpoint.path, content_type, answer.status_code, answer.text[:200])
    assert node.post("/admin/purge_retired").json()["status"] == "success"
    assert node.post("/restart_stuck_jobs").json()["status"] == "success"
    assert node.post("/cleanup", headers={"Content-Type": "text/plain"}).json()["dry_run"] is False
    assert node.post("/cleanup", json={}).json()["status"] == "success"
    extra = node.post("/restart_stuck_jobs", json={"all": True})
    assert _is_error(extra, 400) and extra.json()["field"] == "all", "a field an endpoint never reads is refused"
    assert _is_error(node.post("/admin/purge_retired?dry_run=true"), 400), "so is a query parameter"
    typo = node.post("/selfplay/start", json={"num_games": 1, "node_id": "rules", "temprature_moves": 3})
    assert _is_error(typo, 400) and typo.json()["field"] == "temprature_moves"
    assert not node.status()["jobs"], "no refused request started anything"
    tuned = {"temperature_moves": 3, "games_per_file": 1, "flush_interval_s": 5.0}  # once silently dropped
    started = node.post("/selfplay/start", json={"board_type": "tic_tac_toe", "agent": "random", "num_games": 2,
                                                  "node_id": "rules", **tuned})
    assert started.status_code == 200, started.text
    config = node.job(started.json()["job_id"])["config"]
    assert {key: config[key] for key in tuned} == tuned, config


def test_without_a_token_only_requests_addressed_to_this_node_are_served(node):
    """DNS rebinding: a page at evil.example whose name is re-pointed at 127.0.0.1 is same-origin to the
    browser and sends its own name as Host; IP addresses, localhost and the node's own names pass."""
    port = node.url.rsplit(":", 1)[1]
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}", "Sec-Fetch-Site": "same-origin"}
    for method, path in (("GET", "/status"), ("GET", "/health"), ("POST", "/admin/purge_retired")):
        answer = node.request(method, path, headers=dict(rebound))
        assert _is_error(answer, 403) and "evil.example" in answer.json()["error"], (path, answer.text)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"{socket.gethostname()}:{port}",
                 f"node.localhost:{port}"):
        assert node.get("/status", headers={"Host": host}).status_code == 200, host


def test_cross_site_requests_never_mutate(node):
    mutating = [(e, m) for e in all_endpoints() if e.mutating for m in e.methods]
    assert {("/admin/purge_stale", "GET"), ("/admin/purge_retired", "GET")} <= {(e.path, m) for e, m in mutating}
    for endpoint, method in mutating:
        for headers in CROSS_SITE:
            answer = node.request(method, _path(endpoint), headers=dict(headers), json={"job_type": "benchmark"}
                                  if method == "POST" else None)
            assert _is_error(answer, 403), (method, endpoint.path, headers, answer.status_code, answer.text[:200])
    assert not node.status()["jobs"]
    for headers in CROSS_SITE:  # reading is not refused: without CORS headers the page cannot see the answer
        assert node.get("/status", headers=dict(headers)).status_code == 200
    own = node.url.removeprefix("http://")
    assert node.post("/admin/purge_retired", headers={"Origin": f"http://{own}"}).status_code == 200
    assert node.get("/admin/purge_stale", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    spec = node.get("/openapi.json").json()
    assert spec["paths"]["/admin/purge_stale"]["get"]["x-cross-site"] == "refused"
    assert "x-cross-site" not in spec["paths"]["/status"]["get"]
    assert spec["paths"]["/start_job"]["post"]["x-unknown-fields"] == "reject"
    assert spec["paths"]["/heartbeat"]["post"]["x-unknown-fields"] == "reject"
    # a peer's message is input too: a misspelt field is refused by name, not dropped
    answer = node.post("/heartbeat", json={"node_id": "peer-x", "jbos": []})
    assert _is_error(answer, 400) and "jbos" in answer.json()["error"], answer.text


def _curl(example: str, url: str) -> tuple[int, dict]:
    """Run by a shell, as a user pastes it (line continuations included)."""
    command = example.replace(SEED_BASE, url) + """ --silent --write-out '\n%{http_code}'"""
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True)
    body, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(body)


def test_the_seed_curl_examples_work_as_written_and_training_fields_arrive(gateways, tmp_path):
    remote, _ = make_origin(tmp_path)
    node = gateways.start("vast-seed", gateways.ray_node_id(0), git_repo_dir=deployed(tmp_path, remote),
                          git_timeout_s=20.0)
    wait_until(lambda: node.health()["is_leader"], what="the lone node leads")
    code, health = _curl(SEED_CURLS["health"], node.url)
    assert code == 200 and health["node_id"] == "vast-seed"
    code, updated = _curl(SEED_CURLS["git update"], node.url)  # a POST with no body and no Content-Type
    assert code == 200 and updated["status"] == "success" and updated["updated_count"] == 0, updated
    assert node.post("/register", json={"node_id": "vast-123456", "port": 1}).status_code == 200
    code, unretired = _curl(SEED_CURLS["unretire"], node.url)
    assert code == 200 and unretired["message"] == "Node 'vast-123456' has been unretired", unretired

    # The same leader takes the trainer fields /training/start once dropped, into the run's job config.
    tuned = {"blocks": 1, "channels": 8, "value_weight": 0.5}
    base = {"board_type": "tic_tac_toe", "steps": 1, "window_games": 1, "node_id": "vast-seed"}
    started = node.post_to_leader("/training/start", {**base, **tuned, "run_id": "fields-pv"})
    assert started.status_code == 200, started.text
    config = node.get("/training/status", params={"run_id": "fields-pv"}).json()["run"]["config"]
    assert {key: config[key] for key in tuned} == tuned, config
    nnue = node.post_to_leader("/training/nnue/start", {**base, "hidden": [16, 8], "run_id": "fields-nnue"})
    assert nnue.status_code == 200, nnue.text
    assert node.get("/training/status", params={"run_id": "fields-nnue"}).json()["run"]["config"]["hidden"] == [16, 8]
    wrong_kind = node.post("/training/start", json={**base, "hidden": [16], "run_id": "fields-x"})
    assert _is_error(wrong_kind, 400) and wrong_kind.json()["field"] == "hidden", wrong_kind.text
    overridden = node.post("/training/nnue/start", json={**base, "model_kind": "policy_value", "run_id": "fields-y"})
    assert _is_error(overridden, 400) and overridden.json()["field"] == "model_kind", overridden.text


def test_health_says_degraded_then_unavailable_when_actor_calls_fail(gateways):
    node = gateways.start("sick", gateways.ray_node_id(0))
    ok = wait_until(lambda: (h := node.health())["status"] == "ok" and h, timeout_s=30, what="a healthy leader")
    assert ok["reasons"] == [] and "unavailable" in ok["health_rule"]
    ray.kill(node.actors.election, no_restart=True)
    seen = []
    wait_until(lambda: seen.append(node.health()) or seen[-1]["status"] == "unavailable", timeout_s=15,
               interval_s=0.02, what="unavailable after 3 failed refreshes")
    assert any("refreshes failed: ActorDiedError" in reason for reason in seen[-1]["reasons"]), seen[-1]
    assert node.get("/status").status_code == 200, "the cached view still answers"


def _leaderless_s(health: dict) -> float:
    reason = next((r for r in health["reasons"] if r.startswith("no leader known for")), "for 0s")
    return float(reason.split()[-1].rstrip("s"))


def test_health_is_unavailable_when_no_leader_for_two_lease_ttls(gateways):
    node = gateways.start("alone", gateways.ray_node_id(1), voters=["alone", "ghost-1", "ghost-2"])
    ttl_s = node.settings.lease_ttl_s
    lost = wait_until(lambda: (h := node.health())["status"] == "unavailable" and _leaderless_s(h) > 2 * ttl_s and h,
                      timeout_s=30, what="unavailable after 2 lease TTLs without a leader")
    assert lost["leader_id"] is None and lost["uptime_seconds"] >= 2 * ttl_s, lost
