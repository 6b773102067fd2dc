"""One node over real HTTP: health, status, root, tables, OpenAPI."""
from tests.harness import wait_until


def test_lone_node_is_its_own_leader(gateways):
    node = gateways.start("solo", gateways.ray_node_id(0))
    health = wait_until(lambda: (h := node.health())["is_leader"] and h, what="lone node leads")
    assert health["status"] == "ok" and health["node_id"] == "solo" and health["leader_id"] == "solo"
    assert health["uptime_seconds"] >= 0
    status = wait_until(lambda: (s := node.status())["peers"] and s, what="self in peers")
    assert status["leader_id"] == "solo" and status["is_leader"] is True
    assert status["cluster_health"] == "healthy"
    me = status["peers"][0]
    assert me["node_id"] == "solo" and me["state"] == "alive" and me["port"] == node.settings.port
    assert me["resources"]["cpu_count"] >= 1 and me["resources"]["ray_cpus"] >= 1


def test_root_tables_and_openapi(gateways):
    node = gateways.start("tables", gateways.ray_node_id(0))
    root = node.get("/").json()
    assert root["node_id"] == "tables" and root["links"]["openapi"] == "/openapi.json"
    wait_until(lambda: node.get("/nodes/table").json()["nodes"], what="nodes table row")
    assert node.get("/nodes/table").json()["nodes"][0]["node_id"] == "tables"
    text = node.get("/nodes/table", params={"format": "text"})
    assert text.headers["Content-Type"].startswith("text/plain")
    assert text.text.splitlines()[0].split()[:2] == ["node_id", "state"] and "tables" in text.text
    spec = node.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/health", "/status", "/start_job", "/admin/purge_stale"} <= set(spec["paths"])
    assert "StartJobRequest" in spec["components"]["schemas"]
    assert node.get("/nodes/table", params={"format": "xml"}).status_code == 400
    page = node.get(root["links"]["dashboard"])
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "<h2>Peers</h2>" in page.text and "tables" in page.text
