"""Declared endpoints: one table drives routing, argument parsing and the OpenAPI document.

A handler receives the node and its arguments already validated by the endpoint's model
(query parameters and JSON body merged; the body wins), and returns a dict (sent as JSON) or a
ready response. Parsing failures surface as pydantic's ValidationError, which the error
middleware turns into a 400 naming the field.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import web
from pydantic import BaseModel

from orchestrator.errors import BadRequest
from orchestrator.gateway.forward import LEADER_HEADER, forward_to_leader

Handler = Callable[..., Awaitable[dict[str, Any] | web.StreamResponse]]


@dataclass(frozen=True)
class Endpoint:
    methods: tuple[str, ...]
    path: str
    handler: Handler
    summary: str
    args: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    public: bool = False  # served without a token (only GET /health)
    leader_only: bool = False


async def _arguments(request: web.Request, model: type[BaseModel]) -> BaseModel:
    values: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        raw = await request.read()
        if raw.strip():
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BadRequest(f"malformed JSON body: {exc}", field="body") from None
            if not isinstance(body, dict):
                raise BadRequest("JSON body must be an object", field="body")
            values.update(body)
    return model.model_validate(values)


def mount(app: web.Application, endpoints: list[Endpoint], node: Any) -> None:
    for endpoint in endpoints:
        async def handle(request: web.Request, endpoint: Endpoint = endpoint) -> web.StreamResponse:
            if endpoint.leader_only and not node.is_leader:
                return await forward_to_leader(node, request)
            args = await _arguments(request, endpoint.args) if endpoint.args else None
            result = await (endpoint.handler(node, args, request) if endpoint.args else endpoint.handler(node, request))
            response = result if isinstance(result, web.StreamResponse) else web.json_response(result)
            if endpoint.leader_only:
                response.headers[LEADER_HEADER] = node.node_id
            return response

        for method in endpoint.methods:
            app.router.add_route(method, endpoint.path, handle)
