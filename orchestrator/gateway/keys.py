"""Typed keys of what the application and each request carry."""
from typing import Any

from aiohttp import web

NODE: web.AppKey[Any] = web.AppKey("node")
OPENAPI: web.AppKey[dict] = web.AppKey("openapi")
MAX_BODY_BYTES: web.AppKey[int] = web.AppKey("max_body_bytes")
ROUTES: web.AppKey[dict] = web.AppKey("routes")  # aiohttp route -> the Endpoint it serves
BODY: web.RequestKey[Any] = web.RequestKey("json_body")  # the parsed JSON body; absent when none was sent
