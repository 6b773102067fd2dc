"""The rule a cluster git update waits on before it moves to the next node."""
from __future__ import annotations

from orchestrator.ops.rollout import not_back_because

NEW = "b" * 40
OK = {"status": "ok", "reasons": [], "uptime_seconds": 2.0}


def test_back_when_healthy_on_the_new_commit_in_a_new_process():
    assert not_back_because(OK, {"commit": NEW}, NEW, restarting=True, since_answer_s=5.0) is None
    assert not_back_because({**OK, "uptime_seconds": 900.0}, {"commit": NEW}, NEW, restarting=False,
                            since_answer_s=0.1) is None, "no restart: the same process is the updated one"


def test_the_old_process_still_answering_is_not_back_even_on_the_new_commit():
    """HEAD moves before the restart: the old process reports the new commit for a moment."""
    reason = not_back_because({**OK, "uptime_seconds": 900.0}, {"commit": NEW}, NEW, restarting=True,
                              since_answer_s=0.3)
    assert reason.startswith("still the process from before the update")
    assert "uptime" in not_back_because({"status": "ok"}, {"commit": NEW}, NEW, restarting=True, since_answer_s=3.0)


def test_silent_unhealthy_or_wrong_commit_say_why():
    assert not_back_because(None, None, NEW, restarting=True, since_answer_s=3.0) == "/health does not answer"
    degraded = {**OK, "status": "degraded", "reasons": ["no leader known for 1.0s"]}
    assert not_back_because(degraded, {"commit": NEW}, NEW, True, 3.0) is None
    unavailable = {**OK, "status": "unavailable", "reasons": ["no leader known for 9.0s"]}
    assert not_back_because(unavailable, {"commit": NEW}, NEW, True, 3.0) == \
        "/health is 'unavailable': no leader known for 9.0s"
    assert not_back_because(OK, None, NEW, True, 3.0) == "/git/status does not answer"
    assert not_back_because(OK, {"commit": "a" * 40}, NEW, True, 3.0) == f"running commit {'a' * 12}, not {'b' * 12}"


def test_a_forwarded_cluster_update_waits_as_long_as_the_rollout_can_take():
    """A follower relays the seed's cluster update to the leader; with the default settings six nodes'
    restarts alone outlast forward_timeout_s, and the follower must not answer 503 while they go on."""
    from types import SimpleNamespace

    from orchestrator.config import Settings
    from orchestrator.gateway.routes_git import ENDPOINTS, rollout_bound_s

    settings = Settings()
    endpoint = next(e for e in ENDPOINTS if e.path == "/api/cluster/git/update")
    assert endpoint.forward_timeout_s is rollout_bound_s
    six = SimpleNamespace(settings=settings, peers=lambda: [{"state": "alive"}] * 5 + [{"state": "suspect"}] +
                          [{"state": "dead"}, {"state": "retired"}])
    assert rollout_bound_s(six) > 6 * settings.git_rollout_health_timeout_s > settings.forward_timeout_s
    alone = SimpleNamespace(settings=settings, peers=lambda: [{"state": "alive"}])
    assert rollout_bound_s(alone) == settings.forward_timeout_s, "never shorter than the node's own setting"


def test_a_peer_update_is_tried_again_after_a_transient_failure_and_never_after_a_refusal(monkeypatch):
    """A fetch that timed out (503) or a peer that did not answer is tried once more (a fast-forward to
    the same target is idempotent); a dirty tree or a bad ref (409/400) stops the rollout at once. A
    peer the gateway's cached view shows without an address is looked up in its PeerActor's table."""
    import asyncio

    from orchestrator.gateway import routes_git

    peer = {"node_id": "b", "host": "127.0.0.9", "port": 8771}

    def scripted(*answers):
        calls = []

        async def once(node, asked, ref):
            calls.append(asked)
            return answers[len(calls) - 1]
        return once, calls

    def update(asked, ref=None):
        return asyncio.run(routes_git._update_peer(None, asked, ref))

    monkeypatch.setattr(routes_git, "HEALTH_POLL_S", 0.0)
    ok = {"node_id": "b", "status": "success", "updated": True}
    for code in (503, 504):
        once, calls = scripted({"status": "error", "code": code}, ok)
        monkeypatch.setattr(routes_git, "_update_peer_once", once)
        assert update(peer, "main") == ({**ok, "attempts": 2}, peer)
    refused = {"node_id": "b", "status": "error", "code": 409, "error": "the checkout has uncommitted changes"}
    once, calls = scripted(refused, ok)
    monkeypatch.setattr(routes_git, "_update_peer_once", once)
    assert update(peer) == ({**refused, "attempts": 1}, peer)
    down = {"node_id": "b", "status": "error", "code": 503, "error": "unreachable: ClientConnectorError"}
    once, calls = scripted(down, down, ok)
    monkeypatch.setattr(routes_git, "_update_peer_once", once)
    assert update(peer) == ({**down, "attempts": 2}, peer)
    assert len(calls) == routes_git.UPDATE_ATTEMPTS

    tables = [[{"node_id": "b", "host": "", "port": 0}], [peer]]  # the actor learns the address meanwhile

    async def fresh(node):
        return tables.pop(0)

    monkeypatch.setattr(routes_git, "_fresh_peers", fresh)
    once, calls = scripted(ok)
    monkeypatch.setattr(routes_git, "_update_peer_once", once)
    report, used = update({"node_id": "b", "host": "", "port": 0})
    assert (report["attempts"], used, calls) == (2, peer, [peer]), "never a request to an empty address"
