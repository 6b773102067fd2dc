"""Declared endpoints: one table drives routing, argument parsing, auth and the OpenAPI document.

A handler receives the node and its arguments already validated by the endpoint's model
(query parameters and JSON body merged; the body wins), and returns a dict (sent as JSON) or a
ready response. The body was parsed by the `json_body` middleware; parsing failures surface as
pydantic's ValidationError, which the error middleware turns into a 400 naming the field.
Arguments are checked before a leader-only call is forwarded, so bad input is a 400 on any node,
with or without a leader.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import web
from pydantic import BaseModel

from orchestrator.errors import BadRequest
from orchestrator.gateway.forward import LEADER_HEADER, forward_to_leader
from orchestrator.gateway.keys import BODY, ROUTES

Handler = Callable[..., Awaitable[dict[str, Any] | web.StreamResponse]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
    # How long a follower waits for the leader's answer when it forwards this call; None: the node's
    # forward_timeout_s. For calls whose length the caller can bound better (a rollout over N nodes).
    forward_timeout_s: Callable[[Any], float] | None = None

    @property
    def mutating(self) -> bool:
        """True when any method changes state; the seed's purge routes then mutate on GET as well."""
        return any(method not in SAFE_METHODS for method in self.methods)


def endpoint_of(request: web.Request) -> Endpoint | None:
    """The declared endpoint a request was routed to; None for unknown paths and wrong methods."""
    return request.app[ROUTES].get(request.match_info.route)


def _arguments(request: web.Request, model: type[BaseModel] | None) -> BaseModel | None:
    body = request.get(BODY, {})
    if not isinstance(body, dict):
        raise BadRequest("body: JSON body must be an object", field="body")
    if model is None:
        if body or request.query:  # an endpoint without arguments takes none: one sent would be ignored
            field = str(next(iter(body or request.query)))
            raise BadRequest(f"{field}: unknown field (this endpoint takes no arguments)", field=field)
        return None
    return model.model_validate({**request.query, **body})


def mount(app: web.Application, endpoints: list[Endpoint], node: Any) -> None:
    routes: dict[Any, Endpoint] = {}
    for endpoint in endpoints:
        async def handle(request: web.Request, endpoint: Endpoint = endpoint) -> web.StreamResponse:
            args = _arguments(request, endpoint.args)
            if endpoint.leader_only and not node.is_leader:
                timeout_s = endpoint.forward_timeout_s(node) if endpoint.forward_timeout_s else None
                return await forward_to_leader(node, request, timeout_s)
            result = await (endpoint.handler(node, args, request) if endpoint.args else endpoint.handler(node, request))
            response = result if isinstance(result, web.StreamResponse) else web.json_response(result)
            if endpoint.leader_only:
                response.headers[LEADER_HEADER] = node.node_id
            return response

        for method in endpoint.methods:
            routes[app.router.add_route(method, endpoint.path, handle)] = endpoint
    app[ROUTES] = routes
