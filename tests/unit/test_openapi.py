"""The OpenAPI document, built from the gateway's real endpoint table without a server."""
import re

from orchestrator.gateway.app import all_endpoints
from orchestrator.gateway.openapi import build_openapi, path_parameters


def test_every_variable_segment_of_a_path_is_a_declared_required_path_parameter():
    paths = build_openapi(all_endpoints())["paths"]
    diagnose = paths["/connectivity/diagnose/{node_id}"]["get"]
    assert {"name": "node_id", "in": "path", "required": True, "schema": {"type": "string"}} in diagnose["parameters"]
    templated = [path for path in paths if "{" in path]
    assert templated, "the table has templated paths to check"
    for path in templated:
        for method, operation in paths[path].items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", path)), (method, path)


def test_an_aiohttp_pattern_segment_is_declared_by_its_name():
    assert [p["name"] for p in path_parameters("/a/{model_id}/b/{path:.+}")] == ["model_id", "path"]
    assert path_parameters("/health") == []
