"""The dashboard escapes everything it shows."""
from orchestrator.gateway.dashboard import render


def test_values_are_escaped_and_sections_present():
    status = {"node_id": "<script>n</script>", "leader_id": "n", "epoch": 3, "cluster_health": "healthy",
              "peers": [{"node_id": "n", "state": "alive", "host": "h", "port": 1, "seconds_since_heartbeat": 0.1,
                         "running_jobs": [], "resources": {}}],
              "jobs": [{"job_id": "j&1", "job_type": "selfplay", "node_id": "n", "state": "running", "stuck": False,
                        "progress": {"games_done": 2, "games_total": 9}, "attempt": 1}]}
    health = {"status": "degraded", "reasons": ["last view refresh failed: <b>boom</b>"]}
    page = render(status, health)
    assert "<script>n</script>" not in page and "&lt;script&gt;" in page
    assert "j&amp;1" in page and "2/9" in page and "epoch 3" in page
    assert 'this node: <b class="degraded">degraded</b>' in page and "&lt;b&gt;boom&lt;/b&gt;" in page
