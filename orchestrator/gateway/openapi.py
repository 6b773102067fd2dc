"""The OpenAPI 3.1 document, generated from the endpoint table and its pydantic models."""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from orchestrator import __version__
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.models import ErrorResponse

REF = "#/components/schemas/{model}"
PATH_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")  # aiohttp's {name} or {name:regex}
RULES = ("A request body, when sent, is a JSON object sent as application/json (415 otherwise); a body the "
         "JSON parser rejects, NaN, Infinity and integers outside the signed 64-bit range are a 400. "
         "x-unknown-fields: reject means an unknown field is a 400 naming it (every request, "
         "peer messages included). x-cross-site: refused means a request a browser marks as coming from "
         "another site (Origin of another host, Sec-Fetch-Site cross-site or same-site) is a 403. "
         "Errors are {status: error, error, code}.")


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template=REF)
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in schema.get("properties", {}).items()]


def path_parameters(path: str) -> list[dict[str, Any]]:
    """The variable segments of a route (`/connectivity/diagnose/{node_id}`): required strings, as
    aiohttp hands them to the handler; OpenAPI wants every one of them declared."""
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in PATH_PARAMETER.findall(path)]


def unknown_fields(model: type[BaseModel]) -> str:
    """`reject` (a 400 naming the field): every request model forbids unknown fields."""
    return "reject" if model.model_config.get("extra") == "forbid" else "ignore"


def build_openapi(endpoints: list[Endpoint]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    error = {"description": "Error", "content": {"application/json": {"schema": _schema(ErrorResponse, schemas)}}}
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        for method in endpoint.methods:
            operation: dict[str, Any] = {"summary": endpoint.summary, "responses": {"default": error}}
            ok: dict[str, Any] = {"description": "Success"}
            if endpoint.response:
                ok["content"] = {"application/json": {"schema": _schema(endpoint.response, schemas)}}
            operation["responses"]["200"] = ok
            parameters = path_parameters(endpoint.path)
            if endpoint.args and method == "GET":
                parameters += _parameters(endpoint.args)
            if parameters:
                operation["parameters"] = parameters
            elif endpoint.args:
                operation["requestBody"] = {"required": False,
                                            "content": {"application/json": {"schema": _schema(endpoint.args, schemas)}}}
            if endpoint.args:
                operation["x-unknown-fields"] = unknown_fields(endpoint.args)
            if endpoint.mutating:
                operation["x-cross-site"] = "refused"
            if endpoint.public:
                operation["security"] = []
            if endpoint.leader_only:
                operation["x-leader-only"] = True
            paths.setdefault(PATH_PARAMETER.sub(r"{\1}", endpoint.path), {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "P2P orchestrator admin API", "version": __version__, "description": RULES},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
