"""Provider HTTP APIs against a real HTTP server on 127.0.0.1 serving each API's documented format.

The server records what arrived (path, query, headers), so the tests see the key sent the way each
API documents, and the AWS request signed for the host it actually reached.
"""
from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.errors import Unavailable
from orchestrator.ops.provider_api import (fetch_hosts, parse_tailscale_devices, read_describe_instances_xml,
                                           sigv4_headers)
from orchestrator.ops.registry import Registry, parse_aws

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "registry"
NOW = dt.datetime(2026, 11, 30, 12, 0, 0, tzinfo=dt.timezone.utc)


class FakeProvider:
    """Answers GETs from `routes` ({path: (status, body)}; AWS pages by their NextToken) and keeps the requests."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str]] = {}
        self.requests: list[dict] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parts.query))
                provider.requests.append({"path": parts.path, "query": query, "headers": dict(self.headers)})
                key = parts.path + (f"#{query['NextToken']}" if "NextToken" in query else "")
                status, body = provider.routes.get(key, (404, '{"error": "no such route"}'))
                payload = body.encode()
                self.send_response(status)
                if 300 <= status < 400:  # to a path that would answer, were the redirect followed
                    self.send_header("Location", f"{provider.url}/api/v0/instances/")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api():
    server = FakeProvider()
    yield server
    server.close()


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_vast_api_sends_the_bearer_key_and_parses_like_the_cli(api, monkeypatch):
    monkeypatch.setenv("TEST_VAST_KEY", "vast-secret-1")
    cli_list = fixture("vast_show_instances.json")
    api.routes["/api/v0/instances/"] = (200, json.dumps({"instances": json.loads(cli_list)}))
    settings = Settings(vast_api_key_env="TEST_VAST_KEY", vast_api_url=f"{api.url}/api/v0", port=8770)
    hosts = fetch_hosts("vast", settings)
    assert [(h.host_id, h.state, h.ports) for h in hosts] == [("vast-7835610", "running", {"gateway": 41770, "ssh": 41022}),
                                                              ("vast-7835611", "loading", {})]
    assert api.requests[-1]["headers"]["Authorization"] == "Bearer vast-secret-1"


def test_the_key_can_come_from_a_file_and_an_empty_source_says_which(api, tmp_path, monkeypatch):
    key_file = tmp_path / "vast_api_key"
    key_file.write_text("from-a-file\n")
    api.routes["/api/v0/instances/"] = (200, '{"instances": []}')
    assert fetch_hosts("vast", Settings(vast_api_key_file=key_file, vast_api_url=f"{api.url}/api/v0")) == []
    assert api.requests[-1]["headers"]["Authorization"] == "Bearer from-a-file"

    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    with pytest.raises(Unavailable) as unset:
        fetch_hosts("vast", Settings(vast_api_key_env="UNSET_KEY_VAR", vast_api_url=f"{api.url}/api/v0"))
    assert "$UNSET_KEY_VAR" in unset.value.message and unset.value.extra["missing"] == "vast_api_key_env"
    with pytest.raises(Unavailable) as unreadable:
        fetch_hosts("vast", Settings(vast_api_key_file=tmp_path / "nope", vast_api_url=f"{api.url}/api/v0"))
    assert "vast_api_key_file" in unreadable.value.message


def test_neither_api_nor_cli_configured_names_both():
    with pytest.raises(Unavailable) as missing:
        fetch_hosts("tailscale", Settings())
    assert "tailscale_cli" in missing.value.message and "tailscale_api_key_env" in missing.value.message


def test_tailscale_api_devices(api, monkeypatch):
    monkeypatch.setenv("TEST_TS_KEY", "tskey-api-abc")
    api.routes["/api/v2/tailnet/example.com/devices"] = (200, fixture("tailscale_api_devices.json"))
    settings = Settings(tailscale_api_key_env="TEST_TS_KEY", tailscale_tailnet="example.com",
                        tailscale_api_url=f"{api.url}/api/v2", port=8770)
    hosts = {h.name: h for h in fetch_hosts("tailscale", settings)}
    assert api.requests[-1]["headers"]["Authorization"] == "Bearer tskey-api-abc"
    assert (hosts["pangolin"].host_id, hosts["pangolin"].address, hosts["pangolin"].state) == \
        ("n292kg92CNTRL", "100.71.74.78", "online"), "the IPv4 address is preferred"
    assert hosts["pangolin"].ports == {"gateway": 8770} and hosts["pangolin"].details["dns_name"].endswith(".ts.net")
    assert hosts["laptop"].state == "offline"


@pytest.mark.parametrize("text", ["not json", "[]", '{"devices": 3}', '{"devices": [{"hostname": "no id"}]}'])
def test_tailscale_api_malformed_answers_are_clear_errors(text):
    with pytest.raises(ValueError):
        parse_tailscale_devices(text, 8770)


def test_sigv4_matches_the_aws_test_suite_vector():
    """get-vanilla-query-order-key-case from AWS's Signature Version 4 test suite."""
    headers = sigv4_headers("https://example.amazonaws.com/?Param2=value2&Param1=value1", "us-east-1", "service",
                            "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                            dt.datetime(2015, 8, 30, 12, 36, 0, tzinfo=dt.timezone.utc))
    assert headers["X-Amz-Date"] == "20150830T123600Z"
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, "
        "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")


def test_aws_describe_instances_signed_paged_and_parsed_like_the_cli(api, monkeypatch):
    monkeypatch.setenv("TEST_AWS_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("TEST_AWS_SECRET", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("TEST_AWS_TOKEN", "session-token-1")
    api.routes["/"] = (200, fixture("aws_describe_instances.xml"))
    api.routes["/#page-2"] = (200, fixture("aws_describe_instances_page2.xml"))
    settings = Settings(aws_access_key_id_env="TEST_AWS_ID", aws_secret_access_key_env="TEST_AWS_SECRET",
                        aws_session_token_env="TEST_AWS_TOKEN", aws_region="eu-west-1", aws_api_url=api.url, port=8770)
    trainer, stopped = fetch_hosts("aws", settings, now=lambda: NOW)

    first, second = api.requests
    assert first["query"] == {"Action": "DescribeInstances", "Version": "2016-11-15"}
    assert second["query"]["NextToken"] == "page-2"
    for arrived in (first, second):  # signed for the Host and query the server received, by the same key
        url = f"http://{arrived['headers']['Host']}/?{urllib.parse.urlencode(arrived['query'])}"
        expected = sigv4_headers(url, "eu-west-1", "ec2", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                 NOW, "session-token-1")
        assert arrived["headers"]["Authorization"] == expected["Authorization"]
        assert "SignedHeaders=host;x-amz-date;x-amz-security-token" in expected["Authorization"]
        assert arrived["headers"]["X-Amz-Security-Token"] == "session-token-1"
        assert arrived["headers"]["X-Amz-Date"] == "20261130T120000Z"

    assert (trainer.host_id, trainer.name, trainer.address, trainer.state) == ("i-1234567890abcdef0", "trainer-1",
                                                                               "54.194.252.215", "running")
    assert trainer.details["availability_zone"] == "eu-west-1c" and trainer.details["private_ip"] == "192.168.1.88"
    assert (stopped.name, stopped.address, stopped.state) == ("i-0598c7d356eba48d7", "10.0.1.23", "stopped")


def test_the_xml_reads_into_the_clis_json_shape():
    """One function makes hosts of both: the XML's fields land where the CLI's JSON has them."""
    doc, token = read_describe_instances_xml(fixture("aws_describe_instances.xml"))
    assert token == "page-2"
    (from_xml,) = parse_aws(json.dumps(doc), 8770)
    assert (from_xml.ports, from_xml.details["instance_type"]) == ({"gateway": 8770, "ssh": 22}, "g5.xlarge")
    with pytest.raises(ValueError):
        read_describe_instances_xml("<Response><Errors/></Response>")


def test_aws_api_half_configured_says_what_is_missing(monkeypatch):
    monkeypatch.setenv("TEST_AWS_ID", "AKIDEXAMPLE")
    with pytest.raises(Unavailable) as half:
        fetch_hosts("aws", Settings(aws_access_key_id_env="TEST_AWS_ID"))
    assert "aws_secret_access_key_env" in half.value.message and "aws_region" in half.value.message


def test_an_error_status_becomes_the_last_error_and_the_previous_hosts_stay(api, monkeypatch):
    monkeypatch.setenv("TEST_VAST_KEY", "vast-secret-1")
    settings = Settings(vast_api_key_env="TEST_VAST_KEY", vast_api_url=f"{api.url}/api/v0", port=8770)
    registry = Registry()
    api.routes["/api/v0/instances/"] = (200, json.dumps({"instances": json.loads(fixture("vast_show_instances.json"))}))
    before = registry.refresh("vast", lambda: fetch_hosts("vast", settings), clock=lambda: 100.0)
    assert len(before.hosts) == 2 and before.error is None

    api.routes["/api/v0/instances/"] = (401, '{"success": false, "error": "invalid_api_key"}')
    with pytest.raises(Unavailable) as refused:
        registry.refresh("vast", lambda: fetch_hosts("vast", settings), clock=lambda: 200.0)
    assert refused.value.code == 503
    status = registry.status([], now=300.0)["vast"]
    assert status["last_error"] == 'Vast.ai: the API answered 401: {"success": false, "error": "invalid_api_key"}'
    assert (status["last_error_at"], status["refreshed_at"], status["host_count"]) == (200.0, 100.0, 2)
    assert "vast-secret-1" not in status["last_error"]


def test_an_unreachable_api_and_a_redirect_are_errors_not_followed(api, monkeypatch):
    monkeypatch.setenv("TEST_TS_KEY", "tskey-api-abc")
    api.close()  # nothing listens there any more
    with pytest.raises(Unavailable) as unreachable:
        fetch_hosts("tailscale", Settings(tailscale_api_key_env="TEST_TS_KEY", tailscale_api_url=f"{api.url}/api/v2",
                                          provider_timeout_s=5))
    assert "unreachable" in unreachable.value.message

    other = FakeProvider()
    try:
        other.routes["/api/v2/tailnet/-/devices"] = (302, "")
        with pytest.raises(Unavailable) as redirected:
            fetch_hosts("tailscale", Settings(tailscale_api_key_env="TEST_TS_KEY",
                                              tailscale_api_url=f"{other.url}/api/v2"))
        assert "answered 302" in redirected.value.message and len(other.requests) == 1
    finally:
        other.close()
