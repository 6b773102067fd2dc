"""The Unix-socket channel to a NetworkServer: the answers of a direct evaluate, refusals as ChannelError."""
from __future__ import annotations

import asyncio
import socket
import threading

import numpy as np
import pytest
import torch

from orchestrator.nn.channel import REQUEST, ChannelClient, ChannelError, serve_channel
from orchestrator.nn.resnet import PolicyValueNet, ResNetConfig
from orchestrator.nn.serving import NetworkServer, PreparedNetwork
from orchestrator.play.games import BUILTIN

SPEC = BUILTIN.spec("tic_tac_toe")


@pytest.fixture
def served(tmp_path):
    """(socket path, server, network) with the server's event loop in a thread, stopped at the end."""
    torch.manual_seed(0)
    net = PolicyValueNet(ResNetConfig.for_game(SPEC, blocks=1, channels=8)).eval()
    server = NetworkServer("cpu")
    server.load("net", net, "float32")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    path = str(tmp_path / "server.sock")
    listener = asyncio.run_coroutine_threadsafe(serve_channel(server, path), loop).result(10)
    yield path, lambda: asyncio.run_coroutine_threadsafe(_shut(listener), loop).result(10), \
        PreparedNetwork(net, "cpu", "float32")
    asyncio.run_coroutine_threadsafe(_shut(listener), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


async def _shut(listener: asyncio.AbstractServer) -> None:
    """What a dying server does to its channel: no more connections, and the open ones closed."""
    listener.close()
    handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)


def observations(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, *SPEC.observation_shape), dtype=np.float32)


def test_two_requests_in_flight_get_the_answers_of_a_direct_forward_pass(served):
    path, _, network = served
    client = ChannelClient(path, "net", "worker-1", timeout_s=10)
    first, second = observations(3, 1), observations(5, 2)
    waiting = [client.submit(first), client.submit(second)]  # two connections, both answered
    for wait, x in zip(waiting, (first, second)):
        logits, values = wait()
        expected = network(x)  # the server may batch the two together: the same up to float rounding
        np.testing.assert_allclose(logits, expected[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(values, expected[1], rtol=1e-5, atol=1e-7)
    assert len(client._idle) == 2
    np.testing.assert_array_equal(client.submit(first)()[0], network(first)[0])  # connections are reused
    assert len(client._idle) == 2
    client.close()


def test_an_unknown_network_or_a_gone_server_is_a_channel_error(served, tmp_path):
    path, stop_server, _ = served
    with pytest.raises(ChannelError, match="unknown network"):
        ChannelClient(path, "other", "worker-1", timeout_s=10).submit(observations(2, 3))()
    with pytest.raises(ChannelError):
        ChannelClient(str(tmp_path / "absent.sock"), "net", "worker-1", timeout_s=10).submit(observations(2, 3))
    client = ChannelClient(path, "net", "worker-1", timeout_s=10)
    client.submit(observations(2, 4))()
    stop_server()
    with pytest.raises(ChannelError):  # the reused connection, or a new one, finds no server
        client.submit(observations(2, 5))()
    client.close()


def test_a_malformed_request_closes_the_connection_and_the_server_goes_on(served):
    path, _, network = served
    for header in (REQUEST.pack(10_000, 0, 4), REQUEST.pack(3, 0, 0), REQUEST.pack(3, 0, 99)):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(10)
            raw.connect(path)
            raw.sendall(header)
            assert raw.recv(16) == b"", "closed without an answer"
    x = observations(2, 6)
    np.testing.assert_array_equal(ChannelClient(path, "net", "w", timeout_s=10).submit(x)()[0], network(x)[0])
