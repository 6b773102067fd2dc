"""Auth and error middleware: every failure leaves as `{"status":"error","error":...,"code":N}`."""
from __future__ import annotations

import hmac
import logging
from typing import Awaitable, Callable

import ray
from aiohttp import web
from pydantic import ValidationError

from orchestrator.errors import ApiError, Unavailable
from orchestrator.gateway.keys import MAX_BODY_BYTES

log = logging.getLogger(__name__)
PUBLIC = {("GET", "/health"), ("HEAD", "/health")}


def error_response(code: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"status": "error", "error": message, "code": code, **extra}, status=code)


def _validation_message(exc: ValidationError) -> tuple[str, str]:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    return field, f"{field}: {first['msg']}"


def _unwrap(exc: BaseException) -> BaseException:
    """Ray re-raises an actor's exception wrapped; the original is its `cause`."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(exc, ray.exceptions.RayTaskError) and cause is not None else exc


@web.middleware
async def errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.reason if exc.status != 413 else f"request body over the limit of {request.app[MAX_BODY_BYTES]} bytes"
        return error_response(exc.status, reason)
    except Exception as raw:  # every failure becomes the documented shape; never a traceback
        exc = _unwrap(raw)
        if isinstance(exc, ApiError):
            return web.json_response(exc.to_body(), status=exc.code)
        if isinstance(exc, ValidationError):
            field, message = _validation_message(exc)
            return error_response(400, message, field=field)
        if isinstance(exc, (TimeoutError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError)):
            return web.json_response(Unavailable(f"node actor unavailable: {type(exc).__name__}").to_body(), status=503)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}")


def auth(token: str | None):
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def check(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if expected is None or (request.method, request.path) in PUBLIC:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return error_response(401, "missing or wrong bearer token")
        return await handler(request)

    return check
