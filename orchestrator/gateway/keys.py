"""Typed keys of what the application object carries."""
from typing import Any

from aiohttp import web

NODE: web.AppKey[Any] = web.AppKey("node")
OPENAPI: web.AppKey[dict] = web.AppKey("openapi")
MAX_BODY_BYTES: web.AppKey[int] = web.AppKey("max_body_bytes")
