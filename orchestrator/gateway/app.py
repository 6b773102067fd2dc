"""Building and serving the gateway application for one node."""
from __future__ import annotations

import socket

import ray
from aiohttp import web

from actors.naming import root_cause
from orchestrator.errors import ApiError, Unavailable
from orchestrator.gateway import middleware, routes_admin, routes_core, routes_election, routes_jobs, routes_selfplay
from orchestrator.gateway import routes_cmaes, routes_training
from orchestrator.gateway import routes_sync
from orchestrator.gateway import routes_abtest, routes_elo, routes_gauntlet, routes_tournament
from orchestrator.gateway import routes_connectivity, routes_git, routes_registry
from orchestrator.gateway import routes_improvement, routes_pipeline, routes_rollback, routes_trends
from orchestrator.gateway.keys import MAX_BODY_BYTES, NODE, OPENAPI
from orchestrator.gateway.endpoint import Endpoint, mount
from orchestrator.gateway.node import NodeGateway
from orchestrator.gateway.openapi import build_openapi
from orchestrator.play.analytics import AnalyticsCache

ROUTE_MODULES = (routes_core, routes_admin, routes_election, routes_jobs, routes_selfplay, routes_training, routes_cmaes,
                 routes_git, routes_registry, routes_connectivity, routes_sync, routes_tournament, routes_elo,
                 routes_abtest, routes_gauntlet, routes_improvement, routes_pipeline, routes_rollback, routes_trends)


def all_endpoints() -> list[Endpoint]:
    return [endpoint for module in ROUTE_MODULES for endpoint in module.ENDPOINTS]


def _actor_unavailable(exc: BaseException) -> ApiError:
    return Unavailable(f"node actor unavailable: {type(exc).__name__}")


# What the layers below raise that is not an ApiError, and what it means to a client.
EXCEPTION_MAP = {
    TimeoutError: _actor_unavailable,  # asyncio's and Ray's GetTimeoutError alike
    ray.exceptions.RayActorError: _actor_unavailable,
}


def own_names(settings) -> frozenset[str]:
    """The host names a request may use to reach this node when it has no token (see middleware.host_guard)."""
    names = {settings.host, settings.advertise_host, socket.gethostname()}
    return frozenset(n.lower() for n in names if n)


def build_app(node: NodeGateway) -> web.Application:
    settings = node.settings
    token = settings.token()
    # With a token, a rebinding page cannot authenticate; without one, the Host is all there is to check.
    guard = middleware.auth(token) if token else middleware.host_guard(own_names(settings))
    app = web.Application(middlewares=[middleware.errors(root_cause, EXCEPTION_MAP), guard,
                                       middleware.same_origin, middleware.json_body],
                          client_max_size=settings.max_body_bytes)
    endpoints = all_endpoints()
    mount(app, endpoints, node)
    app[NODE] = node
    app[OPENAPI] = build_openapi(endpoints)
    app[MAX_BODY_BYTES] = settings.max_body_bytes
    app[routes_selfplay.ANALYTICS] = AnalyticsCache()

    async def lifecycle(app: web.Application):
        await node.start()
        yield
        await node.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


async def serve(node: NodeGateway) -> web.AppRunner:
    """Start serving on the configured address; the caller owns the returned runner."""
    runner = web.AppRunner(build_app(node), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, node.settings.bind_host(), node.settings.port).start()
    return runner
