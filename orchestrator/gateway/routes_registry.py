"""Provider registries (seed section "Registry Management", /registry/*; /register is routes_admin's).

Each node keeps its own registry: the providers' HTTP APIs (when configured) or CLIs are asked
from the node that is asked. The registry
is read from the configured YAML before this node answers anything about it, and written back
there (atomically) only by /registry/save_yaml.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from functools import partial
from pathlib import Path
from typing import Any

from actors.cluster_view import ray_nodes
from orchestrator.fileio import write_atomic
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.models import RequestModel
from orchestrator.ops.provider_api import fetch_hosts
from orchestrator.ops.registry import Registry, parse_ray

log = logging.getLogger(__name__)
_registries: "weakref.WeakKeyDictionary[Any, Registry]" = weakref.WeakKeyDictionary()
_load_errors: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def registry_path(settings) -> Path:
    return Path(settings.registry_yaml) if settings.registry_yaml else settings.node_dir() / "registry.yaml"


def registry_of(node) -> Registry:
    """This node's registry, read from its YAML file on first use."""
    registry = _registries.get(node)
    if registry is None:
        path = registry_path(node.settings)
        try:
            registry = Registry.from_yaml(path.read_text()) if path.is_file() else Registry()
            registry.record("static", list(registry.hosts("static")), time.time())  # static hosts: as of reading
        except (OSError, ValueError) as exc:  # a broken file must not take the API down; status shows why
            log.warning("registry %s not loaded: %s", path, exc)
            registry = Registry()
            registry.record_error("static", f"{path}: {exc}", time.time())
        registry = _registries.setdefault(node, registry)
    return registry


async def status(node, request):
    now = time.time()
    nodes = await asyncio.to_thread(ray_nodes)
    return {"node_id": node.node_id, "yaml_path": str(registry_path(node.settings)),
            "providers": registry_of(node).status(parse_ray(nodes), now)}


def _extra_args(node, provider: str) -> tuple[str, ...]:
    region = node.settings.aws_region
    return ("--region", region) if provider == "aws" and region else ()


async def _refresh(node, provider: str) -> dict[str, Any]:
    fetch = partial(fetch_hosts, provider, node.settings, _extra_args(node, provider))
    state = await asyncio.to_thread(registry_of(node).refresh, provider, fetch)
    return {"status": "success", "provider": provider, **state.to_dict()}


class RefreshRequest(RequestModel):
    """No fields: what runs is fixed by this node's settings."""


async def update_vast(node, args: RefreshRequest, request):
    return await _refresh(node, "vast")


async def update_aws(node, args: RefreshRequest, request):
    return await _refresh(node, "aws")


async def update_tailscale(node, args: RefreshRequest, request):
    return await _refresh(node, "tailscale")


class SaveYamlRequest(RequestModel):
    """No fields: the file is always the configured registry_yaml, never a path from the request."""


async def save_yaml(node, args: SaveYamlRequest, request):
    path = registry_path(node.settings)
    text = registry_of(node).to_yaml(time.time())
    await asyncio.to_thread(write_atomic, path, text.encode())
    return {"status": "success", "path": str(path), "bytes": len(text.encode())}


ENDPOINTS = [
    Endpoint(("GET",), "/registry/status", status,
             "Known hosts per provider (static, ray, vast, aws, tailscale) with last refresh and last error"),
    Endpoint(("POST",), "/registry/update_vast", update_vast,
             "Refresh Vast.ai hosts through its HTTP API when configured, else `vastai show instances --raw`",
             args=RefreshRequest),
    Endpoint(("POST",), "/registry/update_aws", update_aws,
             "Refresh AWS hosts through EC2 DescribeInstances (SigV4) when configured, "
             "else `aws ec2 describe-instances --output json`", args=RefreshRequest),
    Endpoint(("POST",), "/registry/update_tailscale", update_tailscale,
             "Refresh Tailscale hosts through its HTTP API when configured, else `tailscale status --json`",
             args=RefreshRequest),
    Endpoint(("POST",), "/registry/save_yaml", save_yaml, "Write the registry atomically to the configured YAML path",
             args=SaveYamlRequest),
]
