"""Auth and the error shape over real HTTP: 401, 400 naming the field, 404, 405, 413, never a 500."""
import pytest

TOKEN = "s3cret-token"
READS = ["/status", "/", "/nodes/table", "/openapi.json", "/admin/purge_retired", "/job/status?job_id=x"]


@pytest.fixture
def secured(gateways):
    return gateways.start("sec", gateways.ray_node_id(0), token=TOKEN, max_body_bytes=4096)


def _is_error(response, code):
    body = response.json()
    return response.status_code == code and body["status"] == "error" and body["code"] == code and body["error"]


def test_health_is_public_everything_else_needs_the_token(secured):
    assert secured.get("/health", token=None).status_code == 200
    for path in READS:
        assert _is_error(secured.get(path, token=None), 401), path
        assert _is_error(secured.get(path, token="wrong"), 401), path
    assert _is_error(secured.post("/start_job", json={"job_type": "benchmark"}, token=None), 401)
    assert _is_error(secured.post("/admin/purge_stale", token=None), 401)
    assert _is_error(secured.get("/status", token=None, headers={"Authorization": TOKEN}), 401)
    # with a token any Host is served (a proxy's, a DNS name): a rebinding page cannot send the token
    assert secured.get("/status", headers={"Host": "orchestrator.example:8770"}).status_code == 200
    assert secured.get("/status").status_code == 200
    assert not [j for j in secured.status()["jobs"]], "a refused start changed nothing"


def test_error_shapes(secured):
    assert _is_error(secured.get("/no/such/path"), 404)
    assert _is_error(secured.request("DELETE", "/status"), 405)
    assert _is_error(secured.request("PUT", "/start_job", json={}), 405)
    too_big = secured.post("/heartbeat", data=b'{"node_id": "' + b"x" * 8000 + b'"}',
                           headers={"Content-Type": "application/json"})
    assert _is_error(too_big, 413)
    malformed = secured.post("/start_job", data=b"{not json", headers={"Content-Type": "application/json"})
    assert _is_error(malformed, 400) and malformed.json()["field"] == "body"
    missing = secured.post("/start_job", json={"config": {}})
    assert _is_error(missing, 400) and missing.json()["field"] == "job_type"
    bad_id = secured.post("/stop_job", json={"job_id": "../etc/passwd"})
    assert _is_error(bad_id, 400) and bad_id.json()["field"] == "job_id"
    unknown = secured.post("/start_job", json={"job_type": "mine_bitcoin"})
    assert _is_error(unknown, 400) and "benchmark" in unknown.json()["error"]
    bad_config = secured.post("/start_job", json={"job_type": "benchmark", "config": {"duration_s": "soon"}})
    assert _is_error(bad_config, 400) and "duration_s" in bad_config.json()["error"]
    extra_config = secured.post("/start_job", json={"job_type": "benchmark", "config": {"surprise": 1}})
    assert _is_error(extra_config, 400) and "surprise" in extra_config.json()["error"]
    for age in ("0", "-3", "abc", "nan", "inf"):
        assert _is_error(secured.get("/admin/purge_stale", params={"max_age_hours": age}), 400), age
    assert _is_error(secured.post("/heartbeat", json=["not", "an", "object"]), 400)
    assert _is_error(secured.post("/heartbeat", json={"node_id": "a b c"}), 400)
    assert not secured.status()["jobs"], "no bad request created a job"


@pytest.mark.parametrize("body", [None, 1, "x", [], {"node_id": None}, {"job_id": 5}, {"job_type": {}},
                                  {"dry_run": "perhaps"}, {"config": "x", "job_type": "benchmark"}])
def test_garbage_never_causes_a_500(secured, body):
    for path in ("/start_job", "/stop_job", "/job/kill", "/admin/unretire", "/heartbeat", "/register", "/cleanup"):
        response = secured.post(path, json=body)
        assert response.status_code < 500, (path, body, response.text)
        assert "Traceback" not in response.text
