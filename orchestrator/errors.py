"""Errors that cross layers and become HTTP answers: `{"status":"error","error":...,"code":N}`.

Domain code and actors raise these; the gateway's error middleware turns them into responses
(unwrapping Ray's `RayTaskError` to reach them), so no layer below the gateway knows about HTTP.
"""
from __future__ import annotations


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


class NotFound(ApiError):
    code = 404


class Conflict(ApiError):
    code = 409


class Unavailable(ApiError):
    code = 503
