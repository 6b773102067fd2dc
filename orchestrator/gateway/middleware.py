"""The gateway's middleware, outermost first: errors, auth (without a token: the host guard), same-origin, JSON body.

Every failure leaves as `{"status":"error","error":...,"code":N}`. Which exceptions of the layers
below mean what (Ray's actor errors are a 503) is registered by the application that builds the
middleware, as Starlette's exception-handler map is, so this module names no layer below the gateway.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import ValidationError

from orchestrator.errors import ApiError, BadRequest, Forbidden, UnsupportedMediaType, bad_request
from orchestrator.gateway.endpoint import endpoint_of
from orchestrator.gateway.keys import BODY, MAX_BODY_BYTES
from orchestrator.models import INT64_MAX

log = logging.getLogger(__name__)
Next = Callable[[web.Request], Awaitable[web.StreamResponse]]
ExceptionMapper = Callable[[BaseException], ApiError]
JSON_MEDIA_TYPE = "application/json"
INT64_MIN = -INT64_MAX - 1
# Sec-Fetch-Site "same-site" is refused too: a site ignores ports, so a page served by any other
# web app on this host (localhost:3000) is "same-site" to a gateway on localhost:8770.
REFUSED_FETCH_SITES = frozenset({"cross-site", "same-site"})


def error_response(code: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"status": "error", "error": message, "code": code, **extra}, status=code)


def _mapper(mappings: Mapping[type[BaseException], ExceptionMapper], exc: BaseException) -> ExceptionMapper | None:
    return next((mappings[cls] for cls in type(exc).__mro__ if cls in mappings), None)


def errors(unwrap: Callable[[BaseException], BaseException], mappings: Mapping[type[BaseException], ExceptionMapper]):
    """`unwrap` reaches the exception a lower layer raised; `mappings` turn foreign ones into ApiErrors
    (looked up along the exception's MRO, most specific first)."""

    @web.middleware
    async def handle(request: web.Request, handler: Next) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            reason = exc.reason if exc.status != 413 else f"request body over the limit of {request.app[MAX_BODY_BYTES]} bytes"
            return error_response(exc.status, reason)
        except Exception as raw:  # every failure becomes the documented shape; never a traceback
            exc = unwrap(raw)
            if isinstance(exc, ValidationError):
                exc = bad_request(exc)
            elif not isinstance(exc, ApiError) and (mapper := _mapper(mappings, exc)) is not None:
                exc = mapper(exc)
            if isinstance(exc, ApiError):
                return web.json_response(exc.to_body(), status=exc.code)
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, f"internal error: {type(exc).__name__}")

    return handle


def auth(token: str):
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Next) -> web.StreamResponse:
        endpoint = endpoint_of(request)
        if endpoint is not None and endpoint.public:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return error_response(401, "missing or wrong bearer token")
        return await handler(request)

    return check


def addressed_here(host_header: str | None, names: frozenset[str]) -> bool:
    """Whether a request names this node as its host: an IP address, localhost, or one of `names`.

    A DNS-rebinding page (evil.example, re-pointed at 127.0.0.1) is same-origin to the browser and
    carries its own name in Host, so only the Host can tell it from the operator's own requests.
    An IP address cannot be rebound; a request without Host (not a browser's) is let through."""
    if host_header is None:
        return True
    try:
        hostname = urlsplit(f"//{host_header}").hostname
    except ValueError:  # an unbalanced IPv6 bracket
        return False
    if not hostname:
        return False
    try:
        ipaddress.ip_address(hostname)
        return True
    except ValueError:
        return hostname == "localhost" or hostname.endswith(".localhost") or hostname in names


def host_guard(names: frozenset[str]):
    """Without a token, serve only requests addressed to this node (see `addressed_here`)."""

    @web.middleware
    async def check(request: web.Request, handler: Next) -> web.StreamResponse:
        host = request.headers.get("Host")
        if not addressed_here(host, names):
            raise Forbidden(f"Host {host!r} is not this node: with no auth token, only IP addresses, localhost and "
                            "the node's own names (host, advertise_host, hostname) are served")
        return await handler(request)

    return check


def cross_site(headers: Mapping[str, str], host: str) -> str | None:
    """Why a browser's request came from another site, or None. Clients that are not browsers send
    neither header; a browser sends `Origin` on every POST and `Sec-Fetch-Site` on every request."""
    fetch_site = headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site in REFUSED_FETCH_SITES:
        return f"Sec-Fetch-Site: {fetch_site}"
    origin = headers.get("Origin")
    # Host and port only: a TLS proxy in front of the gateway changes the scheme, not the site.
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        return f"Origin {origin} is not this gateway ({host})"
    return None


@web.middleware
async def same_origin(request: web.Request, handler: Next) -> web.StreamResponse:
    """A web page in an operator's browser must not drive the node: refuse cross-site mutations."""
    endpoint = endpoint_of(request)
    if endpoint is not None and endpoint.mutating and (why := cross_site(request.headers, request.host)):
        raise Forbidden(f"cross-site request refused: {why}")
    return await handler(request)


def _first_unrepresentable(value: Any) -> tuple[str, str] | None:
    """(path, why) of the first number no peer or store can hold: NaN and Infinity (not JSON, though
    Python's parser takes them) and integers outside SQLite's signed 64 bits."""
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:  # iterative: the parser bounded the depth, this walk adds no recursion
        path, item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return path or "body", "NaN and Infinity are not JSON numbers"
        if isinstance(item, int) and not isinstance(item, bool) and not INT64_MIN <= item <= INT64_MAX:
            return path or "body", "integer outside the signed 64-bit range"
        if isinstance(item, dict):
            pending.extend((f"{path}.{key}" if path else str(key), child) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            pending.extend((f"{path}.{i}" if path else str(i), child) for i, child in reversed(list(enumerate(item))))
    return None


def parse_json_body(raw: bytes) -> Any:
    """RFC 8259 JSON in UTF-8, or a BadRequest: any body the parser rejects (malformed, not UTF-8,
    nested past the interpreter's recursion limit) is bad input, never a 500."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise BadRequest("body: JSON nested too deeply", field="body") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are ValueErrors
        raise BadRequest(f"body: malformed JSON: {exc}", field="body") from None
    if (problem := _first_unrepresentable(value)) is not None:
        path, why = problem
        raise BadRequest(f"{path}: {why}", field=path)
    return value


@web.middleware
async def json_body(request: web.Request, handler: Next) -> web.StreamResponse:
    """A body, when there is one, is JSON sent as such: a browser can send `text/plain` cross-site
    without asking first, never `application/json`. No body (or only whitespace) is no arguments."""
    if endpoint_of(request) is not None and request.can_read_body:
        raw = await request.read()
        if raw.strip():
            if request.content_type != JSON_MEDIA_TYPE:
                raise UnsupportedMediaType(f"a request body must be sent as {JSON_MEDIA_TYPE}, "
                                           f"not {request.content_type}", content_type=request.content_type)
            request[BODY] = parse_json_body(raw)
    return await handler(request)
