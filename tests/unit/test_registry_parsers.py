"""Provider parsers against fixtures in each tool's documented output format, and the registry round trip."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from orchestrator.errors import Unavailable
from orchestrator.ops.registry import (Host, Registry, parse_aws, parse_ray, parse_tailscale, parse_vast, provider_argv,
                                       run_provider)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "registry"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_vast_cli_list_and_api_wrapper_parse_alike():
    hosts = parse_vast(fixture("vast_show_instances.json"), gateway_port=8770)
    wrapped = parse_vast(json.dumps({"instances": json.loads(fixture("vast_show_instances.json"))}), 8770)
    assert hosts == wrapped
    first, second = hosts
    assert (first.host_id, first.name, first.address, first.state) == ("vast-7835610", "selfplay-a", "203.0.113.17",
                                                                       "running")
    assert first.ports == {"gateway": 41770, "ssh": 41022}, "container ports mapped to the host's ports"
    assert first.details["gpu_name"] == "RTX 4090" and first.details["ssh_host"] == "ssh4.vast.ai"
    assert (second.name, second.state, second.ports) == ("vast-7835611", "loading", {})


def test_vast_gateway_port_follows_the_configured_port():
    hosts = parse_vast(fixture("vast_show_instances.json"), gateway_port=9999)
    assert hosts[0].ports == {"ssh": 41022}


def test_aws_describe_instances():
    trainer, stopped = parse_aws(fixture("aws_describe_instances.json"), gateway_port=8770)
    assert (trainer.host_id, trainer.name, trainer.address, trainer.state) == ("i-1234567890abcdef0", "trainer-1",
                                                                               "34.253.223.13", "running")
    assert trainer.details["availability_zone"] == "us-east-2a" and trainer.ports == {"gateway": 8770, "ssh": 22}
    assert (stopped.name, stopped.address, stopped.state) == ("i-0598c7d356eba48d7", "10.0.1.23", "stopped")


def test_tailscale_status_self_and_peers():
    hosts = {h.name: h for h in parse_tailscale(fixture("tailscale_status.json"), gateway_port=8770)}
    assert set(hosts) == {"head-node", "gpu-box", "laptop"}
    assert hosts["gpu-box"].address == "100.64.0.2", "the IPv4 address is preferred"
    assert (hosts["laptop"].state, hosts["gpu-box"].state) == ("offline", "online")
    assert hosts["head-node"].details["is_self"] and not hosts["gpu-box"].details["is_self"]


@pytest.mark.parametrize("parse,text", [
    (parse_vast, "not json"), (parse_vast, '{"instances": 3}'), (parse_vast, '[{"label": "no id"}]'),
    (parse_aws, "[]"), (parse_aws, '{"Reservations": [{"Instances": [{"State": {}}]}]}'),
    (parse_tailscale, "[]"), (parse_tailscale, '{"Peer": {"k": {"HostName": "no id"}}}'),
])
def test_malformed_output_is_a_clear_error(parse, text):
    with pytest.raises(ValueError):
        parse(text, 8770)


def test_ray_nodes():
    alive, dead = parse_ray([{"NodeID": "a" * 56, "Alive": True, "NodeManagerAddress": "127.0.0.2",
                              "NodeManagerHostname": "head", "Resources": {"CPU": 2.0}},
                             {"NodeID": "b" * 56, "Alive": False, "NodeManagerAddress": "127.0.0.3"}])
    assert (alive.state, alive.address, alive.details["resources"]) == ("alive", "127.0.0.2", {"CPU": 2.0})
    assert dead.state == "dead" and dead.name == "b" * 12


def test_static_yaml_and_the_saved_round_trip():
    registry = Registry.from_yaml(fixture("static_registry.yaml"))
    box1, box2 = registry.hosts("static")
    assert box1.ports == {"gateway": 8770, "ssh": 22} and box2.name == "second box" and box2.state == "configured"
    registry.record("vast", parse_vast(fixture("vast_show_instances.json"), 8770), now=100.0)
    registry.record_error("aws", "AWS: the CLI exited with 255", now=101.0)
    again = Registry.from_yaml(registry.to_yaml(now=102.0))
    assert again.hosts("static") == registry.hosts("static") and again.hosts("vast") == registry.hosts("vast")
    status = again.status([], now=103.0)
    assert list(status) == ["static", "ray_cluster", "vast", "aws", "tailscale"]
    assert status["vast"]["refreshed_at"] == 100.0 and status["vast"]["host_count"] == 2


@pytest.mark.parametrize("text", ["providers: {ray: {hosts: []}}", "providers: {static: {hosts: [{address: x}]}}",
                                  "providers: {static: {hosts: [{host_id: a, ports: {ssh: 70000}}]}}", "- a list"])
def test_bad_registry_yaml_is_refused(text):
    with pytest.raises(ValueError):
        Registry.from_yaml(text)


def test_unconfigured_provider_says_what_is_missing():
    with pytest.raises(Unavailable) as missing:
        provider_argv("vast", None)
    assert "vast_cli" in missing.value.message and "P2P_VAST_CLI" in missing.value.message
    with pytest.raises(Unavailable, match="not an executable"):
        provider_argv("aws", "/nonexistent/aws")


def _tool(tmp_path: Path, body: str) -> str:
    path = tmp_path / "tool"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_run_provider_passes_the_documented_arguments_and_parses(tmp_path):
    args_file = tmp_path / "args"
    tool = _tool(tmp_path, f'echo "$@" > {args_file}; cat {FIXTURES / "aws_describe_instances.json"}')
    argv = provider_argv("aws", tool, ("--region", "us-east-2"))
    hosts = run_provider("aws", argv, timeout_s=20, gateway_port=8770)
    assert [h.host_id for h in hosts] == ["i-1234567890abcdef0", "i-0598c7d356eba48d7"]
    assert args_file.read_text().split() == ["ec2", "describe-instances", "--output", "json", "--region", "us-east-2"]


def test_run_provider_failures_are_unavailable(tmp_path):
    with pytest.raises(Unavailable, match="exited with 3: no credentials"):
        run_provider("vast", [_tool(tmp_path, "echo no credentials >&2; exit 3")], 20, 8770)
    with pytest.raises(Unavailable, match="unexpected output"):
        run_provider("tailscale", [_tool(tmp_path, "echo '[1]'")], 20, 8770)
    with pytest.raises(Unavailable, match="did not answer"):
        run_provider("tailscale", [_tool(tmp_path, "sleep 5")], 0.3, 8770)


def test_host_round_trips_through_its_dict():
    host = Host("static", "h", "h", "192.0.2.1", "configured", {"gateway": 8770}, {"note": "x"})
    assert Host.from_dict("static", host.to_dict()) == host
