"""Ray's own view of the cluster's nodes (from the GCS), for registries and connectivity diagnostics."""
from __future__ import annotations

from typing import Any

import ray

FIELDS = ("NodeID", "Alive", "NodeManagerAddress", "NodeManagerHostname", "Resources")


def ray_nodes() -> list[dict[str, Any]]:
    """Every node Ray knows, dead ones included; blocking (a GCS round trip): call it off the event loop."""
    return [{key: node.get(key) for key in FIELDS} for node in ray.nodes()]
