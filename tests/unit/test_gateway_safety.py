"""The gateway's input rules without a server: JSON parsing, cross-site detection, the health rule,
the error formatter, and request models built from the job configs they feed."""
import dataclasses

import pytest
from pydantic import ValidationError

from orchestrator.errors import BadRequest, bad_request
from orchestrator.gateway.app import all_endpoints
from orchestrator.gateway.health import Health, HealthTimings, judge
from orchestrator.gateway.middleware import cross_site, parse_json_body
from orchestrator.gateway.openapi import unknown_fields
from orchestrator.learn.cmaes import CMAESConfig
from orchestrator.learn.jobs import NNUEJobConfig, PolicyValueJobConfig
from orchestrator.models import CMAESStartRequest, SelfplayStartRequest, StartJobRequest, TrainingStartRequest
from orchestrator.play.selfplay import SelfplayConfig

PEER_MESSAGES = {"/heartbeat", "/register", "/election", "/election/lease", "/coordinator"}


def _refused(raw: bytes) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse_json_body(raw)
    return caught.value


def test_any_body_the_parser_rejects_is_a_bad_request_naming_where():
    assert _refused(b"[" * 100_000).extra["field"] == "body"  # RecursionError inside json
    assert _refused(b'{"node_id": "\xff\xfe"}').extra["field"] == "body"  # not UTF-8
    assert _refused(b"{not json").extra["field"] == "body"
    assert _refused(b'{"metrics": {"ok": 1.0, "loss": NaN}}').extra["field"] == "metrics.loss"
    assert _refused(b'{"lr": -Infinity}').extra["field"] == "lr"
    assert _refused(b'{"jobs": [1, {"epoch": 9223372036854775808}]}').extra["field"] == "jobs.1.epoch"
    assert _refused(b"[-9223372036854775809]").extra["field"] == "0"
    assert parse_json_body(b'{"epoch": 9223372036854775807, "x": [true, null, -1.5e300]}') == {
        "epoch": 2**63 - 1, "x": [True, None, -1.5e300]}


@pytest.mark.parametrize("headers,why", [
    ({"Origin": "http://evil.example"}, "Origin"),
    ({"Origin": "null"}, "Origin"),
    ({"Origin": "http://127.0.0.1:9999"}, "Origin"),  # another port on the same host is another origin
    ({"Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site"),
    ({"Sec-Fetch-Site": "same-site"}, "Sec-Fetch-Site"),
    ({"Sec-Fetch-Site": "cross-site", "Origin": "http://127.0.0.1:8770"}, "Sec-Fetch-Site"),
])
def test_cross_site_requests_are_recognised(headers, why):
    assert why in cross_site(headers, "127.0.0.1:8770")


@pytest.mark.parametrize("headers", [{}, {"Origin": "http://127.0.0.1:8770"}, {"Origin": "https://LOCALHOST:8770"},
                                     {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}])
def test_same_origin_and_non_browser_requests_pass(headers):
    host = "localhost:8770" if "LOCALHOST" in headers.get("Origin", "") else "127.0.0.1:8770"
    assert cross_site(headers, host) is None


def test_health_rule():
    timings = HealthTimings(view_refresh_s=0.5, actor_call_timeout_s=30.0, lease_ttl_s=15.0)
    assert judge(0.4, 0, None, None, timings) == Health("ok", ())
    assert judge(0.4, 0, None, 3.0, timings).status == "degraded"  # electing: no leader yet
    assert judge(0.4, 1, "RayActorError: died", None, timings).status == "degraded"
    assert judge(5.5, 0, None, None, timings).status == "degraded"  # more than 10 refreshes late
    gone = judge(1.5, 3, "RayActorError: died", None, timings)
    assert gone.status == "unavailable" and "RayActorError: died" in gone.reasons[0]
    assert judge(30.0, 0, None, None, timings).status == "degraded"  # a call may take the whole timeout
    hung = judge(40.5, 0, None, None, timings)
    assert hung.status == "unavailable" and "no refresh within 40s" in hung.reasons[0]
    leaderless = judge(0.4, 0, None, 30.5, timings)
    assert leaderless.status == "unavailable" and "no leader known for 30.5s" in leaderless.reasons
    assert judge(0.4, 0, None, 29.5, timings).status == "degraded"


def test_one_formatter_names_the_field():
    with pytest.raises(ValidationError) as caught:
        StartJobRequest.model_validate({"job_type": "benchmark", "surprise": 1})
    error = bad_request(caught.value)
    assert error.code == 400 and error.extra["field"] == "surprise" and error.message == "surprise: unknown field"
    with pytest.raises(ValidationError) as caught:
        StartJobRequest.model_validate({"job_type": "benchmark", "epoch": 2**63})
    assert bad_request(caught.value).extra["field"] == "epoch"


def test_every_request_rejects_unknown_fields_peer_messages_included():
    policies = {(e.path, unknown_fields(e.args)) for e in all_endpoints() if e.args}
    wrong = {(path, policy) for path, policy in policies if policy != "reject"}
    assert not wrong, wrong
    assert PEER_MESSAGES <= {path for path, _ in policies}


def test_selfplay_request_carries_every_config_field_and_passes_what_was_set():
    assert set(SelfplayStartRequest.model_fields) == set(SelfplayConfig.model_fields) | {"node_id", "job_id"}
    request = SelfplayStartRequest.model_validate({"num_games": 4, "temperature_moves": 6, "games_per_file": 2,
                                                   "flush_interval_s": 5.0, "node_id": "n1"})
    assert request.job_fields() == {"num_games": 4, "temperature_moves": 6, "games_per_file": 2,
                                    "flush_interval_s": 5.0}
    with pytest.raises(ValidationError):
        SelfplayStartRequest.model_validate({"num_games": 4, "games_per_file": 0})  # the config's own bound


def test_training_request_carries_both_trainers_fields():
    leader_set = {"model_id", "epoch", "leader_id"}
    config_fields = (set(PolicyValueJobConfig.model_fields) | set(NNUEJobConfig.model_fields)) - leader_set
    assert set(TrainingStartRequest.model_fields) == config_fields | {"model_kind", "node_id", "run_id"}
    assert {"blocks", "channels", "hidden", "value_weight"} <= config_fields
    request = TrainingStartRequest.model_validate({"blocks": 2, "channels": 16, "value_weight": 0.5, "steps": 3,
                                                   "run_id": "r1"})
    assert request.job_fields() == {"blocks": 2, "channels": 16, "value_weight": 0.5, "steps": 3}
    for leader_only in leader_set:
        with pytest.raises(ValidationError):
            TrainingStartRequest.model_validate({leader_only: "x"})


def test_cmaes_request_matches_the_run_config():
    """CMAESConfig is a dataclass with its own checks, so the request is compared with it, not built from it."""
    request = set(CMAESStartRequest.model_fields) - {"external_workers", "eval_timeout_s"}
    config = {f.name for f in dataclasses.fields(CMAESConfig)}
    assert request - {"games_per_eval"} | {"games_per_candidate"} == config
    from orchestrator.gateway.routes_cmaes import CONFIG_FIELDS  # what the handler forwards
    assert set(CONFIG_FIELDS) | {"run_id", "games_per_candidate"} == config
    seed_alias = CMAESStartRequest.model_validate({"params": {"w": [0, 1]}, "generations": 1, "games_per_candidate": 8})
    assert seed_alias.games_per_eval == 8


def test_the_host_guard_reads_any_host_header_without_failing():
    from orchestrator.gateway.middleware import addressed_here

    names = frozenset({"box"})
    served = ["127.0.0.1:8770", "[::1]:8770", "10.1.2.3", "LOCALHOST:8770", "ui.localhost", "box:8770", None]
    refused = ["evil.example:8770", "box.evil.example", "[::1", "a b", "", ":8770", "\x00", "localhost.evil.example"]
    assert [h for h in served if not addressed_here(h, names)] == []
    assert [h for h in refused if addressed_here(h, names)] == []
