"""Errors that cross layers and become HTTP answers: `{"status":"error","error":...,"code":N}`.

Domain code and actors raise these; the gateway's error middleware turns them into responses
(unwrapping Ray's `RayTaskError` to reach them), so no layer below the gateway knows about HTTP.
"""
from __future__ import annotations

from pydantic import ValidationError


class ApiError(Exception):
    code = 500

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def to_body(self) -> dict:
        return {"status": "error", "error": self.message, "code": self.code, **self.extra}


class BadRequest(ApiError):
    code = 400


class Unauthorized(ApiError):
    code = 401


class Forbidden(ApiError):
    code = 403


class NotFound(ApiError):
    code = 404


class Conflict(ApiError):
    code = 409


class UnsupportedMediaType(ApiError):
    code = 415


class Unavailable(ApiError):
    code = 503


def bad_request(exc: ValidationError) -> BadRequest:
    """The one translation of pydantic's first error into a 400 that names the offending field."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    why = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    return BadRequest(f"{field}: {why}", field=field)
