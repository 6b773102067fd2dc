"""The node's batched inference servers (`inference:<node_id>:gpu<i>`, or `inference:<node_id>` on a
CPU node) and the client that search workers call.

One `InferenceServer` per GPU owns that device (`cuda:<i>`, Ray's GPU i), and a node without GPUs
runs one on its CPU; together they serve every search worker of every job on the node, each
worker bound to one server. A server is an async actor, so that the requests of many workers wait
together in the pure `NetworkServer` (orchestrator/nn/serving.py) and go through one forward pass
per network. Observations arrive as numpy arrays and answers go back the same way: over the
server's Unix-socket channel from workers on its machine (orchestrator/nn/channel.py), else as Ray
actor calls, which move large arrays through the node's object store without pickling them. Where Ray declares GPUs that CUDA
cannot see (the test suite's fake GPU node), the servers run on the CPU and say so in `info`.

A server is detached and restarts itself after a crash (`max_restarts=-1`), losing its loaded
networks: `InferenceClient` retries a call while the actor is down, and when the restarted
server no longer knows the network, it loads it again from the object reference the job put in
the object store, then retries. On Ray's books a server holds no CPU and no GPU: every self-play
job on a GPU node holds a whole GPU for its coordinating task (the supervisor asks for it before
the job knows it will be served), so a server that also asked for one would never be placed on a
one-GPU node. A 0-GPU actor still sees all of the node's devices (Ray leaves CUDA_VISIBLE_DEVICES
alone), which is why it picks its device by index.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
import uuid
from typing import Any, Callable

import numpy as np
import ray
import torch

from actors.naming import NAMESPACE, inference_name, lookup, pinned, root_cause
from orchestrator.nn.channel import ChannelClient, ChannelError, serve_channel
from orchestrator.nn.serving import NetworkServer, ServingConfig, UnknownNetwork

SERVER_RETRY_S = 120.0  # how long a client keeps retrying a server that is down or restarting
CHANNEL_RETRY_S = 5.0  # after its channel failed, how long a client sends actor calls before trying it again
RETRY_INTERVAL_S = 0.2
LOAD_TIMEOUT_S = 120.0


def server_name(node_id: str, gpu: int | None) -> str:
    return inference_name(node_id) if gpu is None else f"{inference_name(node_id)}:gpu{gpu}"


def server_device(gpu: int | None) -> str:
    return f"cuda:{gpu}" if gpu is not None and torch.cuda.is_available() else "cpu"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class InferenceServer:
    def __init__(self, node_id: str, config: ServingConfig, gpu: int | None = None, device: str | None = None) -> None:
        self.node_id = node_id
        self.gpu = gpu
        self.device = device or server_device(gpu)
        self.core = NetworkServer(self.device, config)
        self._channel: asyncio.AbstractServer | None = None
        ray_node = ray.get_runtime_context().get_node_id()
        # The same path after a restart (the stale socket is replaced); another cluster's server of the
        # same name on this machine has another Ray node id.
        digest = hashlib.sha256(f"{ray_node}:{server_name(node_id, gpu)}".encode()).hexdigest()[:20]
        self._channel_path = os.path.join(tempfile.gettempdir(), f"p2p-inference-{digest}.sock")

    async def channel(self) -> tuple[str, str]:
        """(Ray node id, path) of this server's Unix-socket channel (orchestrator/nn/channel.py), opened at the first ask."""
        if self._channel is None:
            self._channel = await serve_channel(self.core, self._channel_path)
        return ray.get_runtime_context().get_node_id(), self._channel_path

    async def load(self, key: str, module_ref: list[ray.ObjectRef], precision: str = "auto") -> bool:
        """Serve the network in the object store under `key` (a list, so Ray does not resolve it for us)
        in `precision`."""
        if key in self.core.keys():
            return False
        loaded = await module_ref[0]
        # A checkpoint loader may hand over a checkpoint holding the module rather than the module.
        return self.core.load(key, getattr(loaded, "model", loaded), precision)

    async def evaluate(self, key: str, observations: np.ndarray, client: str | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        return await self.core.evaluate(key, observations, client)

    async def unload(self, key: str) -> bool:
        return self.core.unload(key)

    async def info(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "gpu": self.gpu, "device": self.device, "networks": self.core.stats(),
                "max_batch": self.core.config.max_batch, "max_wait_s": self.core.config.max_wait_s}


def start_inference_server(node_id: str, ray_node_id: str, config: ServingConfig | None = None,
                           gpu: int | None = None, device: str | None = None) -> Any:
    """The server of GPU `gpu` (None: the CPU server), started pinned to its Ray node if it is not
    running (then `config` is ignored)."""
    return InferenceServer.options(
        name=server_name(node_id, gpu), namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
        scheduling_strategy=pinned(ray_node_id),
    ).remote(node_id, config or ServingConfig(), gpu, device)


def start_inference_servers(node_id: str, ray_node_id: str, gpus: int, config: ServingConfig | None = None
                            ) -> list[str]:
    """The names of the node's servers, one per GPU (or one CPU server where `gpus` is 0), started where not running."""
    indices: list[int | None] = list(range(gpus)) or [None]
    for gpu in indices:
        start_inference_server(node_id, ray_node_id, config, gpu)
    return [server_name(node_id, gpu) for gpu in indices]


class InferenceClient:
    """A `forward(observations) -> (logits, values)` for `ServedEvaluator`, calling the named server,
    and its `submit`, which sends a batch and returns the call that waits for its answer.

    Batches go over the server's Unix-socket channel when the server runs on this machine (a Ray
    actor call per batch costs the server about 1 ms of its core); on any channel failure the batch
    goes again as an actor call, and the channel is tried again `CHANNEL_RETRY_S` later. Actor calls
    retry while the server is down or restarting (up to `retry_s`), reload the network where a
    restarted server lost it, and count their retries.
    """

    def __init__(self, server_name: str, key: str, module_ref: ray.ObjectRef, precision: str = "auto",
                 retry_s: float = SERVER_RETRY_S) -> None:
        self.server_name = server_name
        self.key = key
        self.module_ref = module_ref
        self.precision = precision
        self.retry_s = retry_s
        self.retries = 0
        self.reloads = 0
        self._server = None
        self.client_id = uuid.uuid4().hex  # lets the server see when every client is already waiting
        self._channel: ChannelClient | None = None
        self._channel_tried = -CHANNEL_RETRY_S
        self.channel_batches = 0  # answered over the channel
        self.channel_failures = 0  # channel failures, each batch then sent again as an actor call

    def _handle(self) -> Any:
        if self._server is None:
            self._server = lookup(self.server_name)
        return self._server

    def ensure_loaded(self) -> None:
        ray.get(self._handle().load.remote(self.key, [self.module_ref], self.precision), timeout=LOAD_TIMEOUT_S)

    def __call__(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.submit(observations)()

    def submit(self, observations: np.ndarray) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """Send the batch now, over the server's channel where it has one on this machine, else as an
        actor call; the returned call waits for its answer (by actor calls, retrying, if the channel fails)."""
        channel = self._open_channel()
        if channel is not None:
            try:
                waiting = channel.submit(observations)
            except ChannelError:
                self._channel_failed()
            else:
                return lambda: self._channel_answer(observations, waiting)
        sent = self._send(observations)
        return lambda: self._answer(observations, sent)

    def _open_channel(self) -> ChannelClient | None:
        if self._channel is not None or time.monotonic() - self._channel_tried < CHANNEL_RETRY_S:
            return self._channel
        self._channel_tried = time.monotonic()
        try:
            ray_node, path = ray.get(self._handle().channel.remote(), timeout=LOAD_TIMEOUT_S)
        except (ray.exceptions.RayError, ValueError):
            return None
        if ray_node == ray.get_runtime_context().get_node_id():  # a socket is reachable on its own machine only
            self._channel = ChannelClient(path, self.key, self.client_id, self.retry_s)
        return self._channel

    def _channel_answer(self, observations: np.ndarray, waiting: Callable[[], tuple[np.ndarray, np.ndarray]]
                        ) -> tuple[np.ndarray, np.ndarray]:
        try:
            answer = waiting()
        except ChannelError:
            self._channel_failed()
            return self._answer(observations, self._send(observations))
        self.channel_batches += 1
        return answer

    def _channel_failed(self) -> None:
        self.channel_failures += 1
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _send(self, observations: np.ndarray) -> ray.ObjectRef | None:
        try:
            return self._handle().evaluate.remote(self.key, observations, self.client_id)
        except ValueError:  # not registered under its name at the moment (restarting)
            self._server = None
            return None

    def _answer(self, observations: np.ndarray, sent: ray.ObjectRef | None) -> tuple[np.ndarray, np.ndarray]:
        deadline = time.monotonic() + self.retry_s
        while True:
            failure: BaseException | None = None
            if sent is not None:
                try:
                    logits, values = ray.get(sent)
                    return logits, values
                except ray.exceptions.RayTaskError as exc:
                    if not isinstance(root_cause(exc), UnknownNetwork):
                        raise root_cause(exc) from None
                    self.reloads += 1
                    failure = exc
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                    self._server = None  # down or restarting
                    failure = exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"inference server {self.server_name} unavailable for {self.retry_s:.0f}s") from failure
            self.retries += 1
            time.sleep(RETRY_INTERVAL_S)
            try:
                self.ensure_loaded()
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError,
                    ValueError):
                self._server = None  # still down: the next round tries again
            sent = self._send(observations)
