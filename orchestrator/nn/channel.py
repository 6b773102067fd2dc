"""A Unix-socket channel to a `NetworkServer`: the inference actor's `evaluate`, without a Ray call per batch.

A served batch sent as a Ray actor call costs about 1 ms of the server's core on a 2-core box, a
third of the forward pass it asks for (14 rows in bfloat16; benchmarks/RESULTS.md, part (f)).
Search workers run on their server's node, so they can reach it over a Unix socket instead: a
request is a header, the network's key, the client's id and the float32 observations; the answer
a header and the float32 logits and values. A connection carries one request at a time, and a
client opens one per request it keeps in flight.

The channel is the fast path only. Whatever goes wrong on it (the server restarted and its socket
is gone, it does not know the network, a malformed answer) is a `ChannelError`, and the caller
takes the slow path, which knows how to wait for a restart and load the network again. The server
refuses oversized or malformed requests by closing the connection; its socket is readable by its
own user only.
"""
from __future__ import annotations

import asyncio
import os
import socket
import struct
from typing import Callable

import numpy as np

from orchestrator.nn.serving import NetworkServer, UnknownNetwork

REQUEST = struct.Struct("<III")  # key bytes, client id bytes, dimensions of the observations
DIMENSION = struct.Struct("<I")
ANSWER = struct.Struct("<IIII")  # status; rows, logits per row, values per row (status OK) or message bytes
OK, UNKNOWN_NETWORK, FAILED = 0, 1, 2
MAX_NAME_BYTES = 512
MAX_DIMENSIONS = 8
MAX_FLOATS = 1 << 26  # 256 MiB of float32 observations in one request
SOCKET_MODE = 0o600


class ChannelError(Exception):
    """The channel could not answer; the caller goes the slow way."""


async def serve_channel(server: NetworkServer, path: str) -> asyncio.AbstractServer:
    """Answer requests on a Unix socket at `path` (replacing a stale one) from `server`'s batchers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                key_bytes, client_bytes, ndim = REQUEST.unpack(await reader.readexactly(REQUEST.size))
                if key_bytes > MAX_NAME_BYTES or client_bytes > MAX_NAME_BYTES or not 1 <= ndim <= MAX_DIMENSIONS:
                    return
                shape = [DIMENSION.unpack(await reader.readexactly(DIMENSION.size))[0] for _ in range(ndim)]
                key = (await reader.readexactly(key_bytes)).decode("utf-8", "replace")
                client = (await reader.readexactly(client_bytes)).decode("utf-8", "replace") or None
                count = int(np.prod(shape))
                if count > MAX_FLOATS or shape[0] == 0:
                    return
                observations = np.frombuffer(await reader.readexactly(4 * count), dtype=np.float32).reshape(shape)
                writer.write(await _answer(server, key, observations, client))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    if os.path.exists(path):
        os.unlink(path)
    listener = await asyncio.start_unix_server(handle, path=path)
    os.chmod(path, SOCKET_MODE)
    return listener


async def _answer(server: NetworkServer, key: str, observations: np.ndarray, client: str | None) -> bytes:
    try:
        logits, values = await server.evaluate(key, observations, client)
    except UnknownNetwork:
        return _refusal(UNKNOWN_NETWORK, f"unknown network {key!r}")
    except Exception as exc:  # the batch failed (a shape the network refuses): the slow path reports it
        return _refusal(FAILED, f"{type(exc).__name__}: {exc}")
    logits = np.ascontiguousarray(logits, dtype=np.float32).reshape(len(observations), -1)
    values = np.ascontiguousarray(values, dtype=np.float32).reshape(len(observations), -1)
    return ANSWER.pack(OK, len(observations), logits.shape[1], values.shape[1]) + logits.tobytes() + values.tobytes()


def _refusal(status: int, message: str) -> bytes:
    text = message.encode()[:MAX_NAME_BYTES]
    return ANSWER.pack(status, len(text), 0, 0) + text


class ChannelClient:
    """The worker's end: `submit(observations)` sends at once and returns the call that waits for the answer."""

    def __init__(self, path: str, key: str, client_id: str, timeout_s: float) -> None:
        self.path = path
        self.key = key.encode()
        self.client_id = client_id.encode()
        self.timeout_s = timeout_s
        self._idle: list[socket.socket] = []

    def submit(self, observations: np.ndarray) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        observations = np.ascontiguousarray(observations, dtype=np.float32)
        connection = self._idle.pop() if self._idle else self._connect()
        header = REQUEST.pack(len(self.key), len(self.client_id), observations.ndim)
        dimensions = b"".join(DIMENSION.pack(d) for d in observations.shape)
        try:
            connection.sendall(header + dimensions + self.key + self.client_id + observations.tobytes())
        except OSError as exc:
            connection.close()
            raise ChannelError(f"sending to {self.path}: {exc}") from exc
        return lambda: self._receive(connection)

    def _connect(self) -> socket.socket:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(self.timeout_s)
        try:
            connection.connect(self.path)
        except OSError as exc:
            connection.close()
            raise ChannelError(f"connecting to {self.path}: {exc}") from exc
        return connection

    def _receive(self, connection: socket.socket) -> tuple[np.ndarray, np.ndarray]:
        try:
            status, rows, logit_width, value_width = ANSWER.unpack(_read(connection, ANSWER.size))
            if status != OK:
                raise ChannelError(_read(connection, rows).decode("utf-8", "replace"))
            logits = np.frombuffer(_read(connection, 4 * rows * logit_width), dtype=np.float32)
            values = np.frombuffer(_read(connection, 4 * rows * value_width), dtype=np.float32)
        except (OSError, ChannelError):
            connection.close()
            raise
        self._idle.append(connection)
        return logits.reshape(rows, logit_width), values.reshape(rows, value_width)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def _read(connection: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view, done = memoryview(buffer), 0
    while done < size:
        try:
            got = connection.recv_into(view[done:])
        except OSError as exc:
            raise ChannelError(f"receiving: {exc}") from exc
        if got == 0:
            raise ChannelError("the server closed the connection")
        done += got
    return bytes(buffer)
