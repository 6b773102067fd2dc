"""Dynamic batching (orchestrator/nn/serving.py) and the served leaf evaluator, with a tiny real network."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch

from orchestrator.nn.resnet import PolicyValueNet, ResNetConfig
from orchestrator.nn.serving import (
    DynamicBatcher, NetworkServer, PreparedNetwork, ServingConfig, UnknownNetwork, cpu_computes_bfloat16, serving_dtype,
)
from orchestrator.play.evaluators import NetworkEvaluator
from orchestrator.play.games import BUILTIN
from orchestrator.play.mcts import MCTSAgent, MCTSConfig
from orchestrator.play.served import (
    ServedEvaluator, choose_served, network_key, place_replacement, plan_spread, plan_workers, spread_nodes,
)

GAME = BUILTIN.load("tic_tac_toe")


def tiny_net(seed: int) -> PolicyValueNet:
    torch.manual_seed(seed)
    net = PolicyValueNet(ResNetConfig.for_game(BUILTIN.spec("tic_tac_toe"), blocks=1, channels=8)).eval()
    # Random batch-norm statistics, so folding them (as the server and the in-process evaluator do) matters.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return net


def observations(count: int, seed: int = 0) -> np.ndarray:
    shape = tuple(GAME.observation_tensor_shape())
    return np.random.default_rng(seed).random((count, *shape), dtype=np.float32)


class Recording:
    """A forward pass that remembers the batch sizes it saw and tags each row with its first value."""

    def __init__(self, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.fail = fail

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.sizes.append(len(batch))
        if self.fail:
            raise RuntimeError("forward failed")
        return batch[:, :1] * 2, batch[:, 1:2]


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_share_one_forward_pass_when_the_batch_fills():
    forward = Recording()
    batcher = DynamicBatcher(forward, max_batch=12, max_wait_s=60.0)  # full long before the wait ends
    inputs = [np.arange(i * 8, i * 8 + 8, dtype=np.float32).reshape(4, 2) for i in range(3)]

    async def main():
        return await asyncio.gather(*(batcher.submit(x) for x in inputs))

    started = time.monotonic()
    results = run(main())
    assert time.monotonic() - started < 30, "a full batch runs at once"
    assert forward.sizes == [12]
    for x, (logits, values) in zip(inputs, results):  # every client gets its own rows back
        np.testing.assert_array_equal(logits, x[:, :1] * 2)
        np.testing.assert_array_equal(values, x[:, 1:2])
    stats = batcher.stats()
    assert stats["requests_per_batch"] == 3 and stats["largest_batch"] == 12


def test_a_lone_request_runs_after_the_max_wait():
    forward = Recording()
    batcher = DynamicBatcher(forward, max_batch=1000, max_wait_s=0.05)
    started = time.monotonic()
    run(batcher.submit(np.ones((2, 2), dtype=np.float32)))
    assert time.monotonic() - started >= 0.05
    assert forward.sizes == [2]


def test_the_batch_runs_at_once_when_every_active_client_is_waiting():
    forward = Recording()
    batcher = DynamicBatcher(forward, max_batch=1000, max_wait_s=60.0)

    async def main():
        started = time.monotonic()
        await batcher.submit(np.ones((2, 2), dtype=np.float32), client="lone")  # the only client: no one to wait for
        assert time.monotonic() - started < 30
        # Two clients known and both waiting: one batch at once, not after the minute.
        second = asyncio.ensure_future(batcher.submit(np.ones((3, 2), dtype=np.float32), client="other"))
        first = asyncio.ensure_future(batcher.submit(np.ones((2, 2), dtype=np.float32), client="lone"))
        await asyncio.gather(first, second)
        assert time.monotonic() - started < 30

    run(main())
    assert forward.sizes == [2, 5]


def test_requests_are_never_split_and_a_large_one_runs_alone():
    forward = Recording()
    batcher = DynamicBatcher(forward, max_batch=8, max_wait_s=0.01)
    sizes = [5, 3, 5, 20, 3]

    async def main():
        return await asyncio.gather(*(batcher.submit(np.ones((n, 2), dtype=np.float32)) for n in sizes))

    results = run(main())
    assert [len(logits) for logits, _ in results] == sizes
    # First come, first served: 5 + 3 fill a batch, 5 goes alone (5 + 20 > 8), then the oversized 20, then 3.
    assert forward.sizes == [8, 5, 20, 3]


def test_a_failed_forward_reaches_its_clients_and_the_batcher_goes_on():
    forward = Recording(fail=True)
    batcher = DynamicBatcher(forward, max_batch=4, max_wait_s=0.0)

    async def main():
        with pytest.raises(RuntimeError, match="forward failed"):
            await batcher.submit(np.ones((2, 2), dtype=np.float32))
        forward.fail = False
        return await batcher.submit(np.ones((2, 2), dtype=np.float32))

    logits, _ = run(main())
    assert logits.shape == (2, 1)


def test_requests_of_mismatched_shapes_fail_their_batch_only():
    batcher = DynamicBatcher(Recording(), max_batch=100, max_wait_s=0.05)

    async def main():
        bad = await asyncio.gather(batcher.submit(np.ones((2, 2), dtype=np.float32)),
                                   batcher.submit(np.ones((2, 3), dtype=np.float32)), return_exceptions=True)
        assert all(isinstance(answer, ValueError) for answer in bad)
        return await batcher.submit(np.ones((1, 2), dtype=np.float32))

    logits, _ = run(main())
    assert logits.shape == (1, 1)


def test_two_networks_get_a_queue_each_and_unknown_keys_are_refused():
    nets = {"a": tiny_net(1), "b": tiny_net(2)}
    server = NetworkServer("cpu", ServingConfig(max_batch=64, max_wait_s=0.01))
    assert server.load("a", nets["a"]) and server.load("b", nets["b"]) and not server.load("a", nets["b"])
    x = observations(6)

    async def main():
        return await asyncio.gather(server.evaluate("a", x[:3]), server.evaluate("b", x[3:]), server.evaluate("a", x[3:]))

    (la, va), (lb, vb), (la2, _) = run(main())
    direct = {k: PreparedNetwork(n) for k, n in nets.items()}
    np.testing.assert_allclose(la, direct["a"](x[:3])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lb, direct["b"](x[3:])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(la2, direct["a"](x[3:])[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(lb, la2), "the two networks differ, so each answer came from its own"
    stats = server.stats()
    assert stats["a"]["rows"] == 6 and stats["b"]["rows"] == 3
    with pytest.raises(UnknownNetwork):
        run(server.evaluate("c", x))


def test_bfloat16_only_on_a_cpu_that_has_bfloat16_instructions(tmp_path):
    def flags(line):
        path = tmp_path / f"cpuinfo{len(line)}"
        path.write_text(f"processor\t: 0\nmodel name\t: X\n{line}\n\nprocessor\t: 1\n{line}\n")
        return cpu_computes_bfloat16(str(path))

    assert flags("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni")
    assert flags("flags\t\t: fpu sse2 amx_bf16 amx_tile")
    assert not flags("flags\t\t: fpu sse2 avx2 avx512f avx512bw")  # AVX-512 alone emulates bfloat16
    assert not flags("")
    assert not cpu_computes_bfloat16(str(tmp_path / "absent"))
    expected = torch.bfloat16 if cpu_computes_bfloat16() else torch.float32
    assert serving_dtype("auto", torch.device("cpu")) == expected


def test_precision_as_asked_with_float32_answers():
    net, x = tiny_net(3), observations(5)
    full = PreparedNetwork(net, "cpu", "float32")(x)
    half = PreparedNetwork(net, "cpu", "bfloat16")(x)
    assert half[0].dtype == np.float32  # answers are float32 whatever the compute precision
    np.testing.assert_allclose(half[0], full[0], atol=0.1)
    with pytest.raises(ValueError):
        PreparedNetwork(net, "cpu", "int4")
    # A network is served in the precision it is loaded with; each key keeps its own.
    server = NetworkServer("cpu")
    assert server.load("full", net, "float32") and server.load("half", net, "bfloat16")
    np.testing.assert_array_equal(run(server.evaluate("full", x))[0], full[0])
    np.testing.assert_array_equal(run(server.evaluate("half", x))[0], half[0])
    assert network_key("m1", "auto") == "m1" and network_key("m1", "float32") == "m1@float32"


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "auto"])
def test_served_evaluator_matches_the_in_process_one_bit_for_bit_on_cpu(precision):
    net = tiny_net(4)
    local = NetworkEvaluator(net, GAME, precision=precision)
    served = ServedEvaluator(PreparedNetwork(net, "cpu", precision), GAME)
    states = [GAME.new_initial_state()]
    for action in (4, 0, 8):
        states.append(states[-1].child(action))
    legal = [s.legal_actions() for s in states]
    local_priors, local_values = local.evaluate(states, legal)
    served_priors, served_values = served.evaluate(states, legal)
    np.testing.assert_array_equal(local_values, served_values)
    for a, b in zip(local_priors, served_priors):
        np.testing.assert_array_equal(a, b)
    assert served.stats()["leaves"] == 4


def assert_the_same_moves(local, served, games: int, moves: int) -> None:
    """Both agents play `games` tic-tac-toe games side by side for `moves` moves, choosing alike."""
    boards = [[GAME.new_initial_state() for _ in range(games)] for _ in range(2)]
    for _ in range(moves):
        chosen = [[d.action for d in agent.select_many(states)] for agent, states in zip((local, served), boards)]
        assert chosen[0] == chosen[1]
        for states, actions in zip(boards, chosen):
            for state, action in zip(states, actions):
                state.apply_action(action)


def test_search_makes_the_same_moves_served_and_in_process():
    net = tiny_net(5)
    config = MCTSConfig(24, leaves_per_game=2, dirichlet_epsilon=0.25, tree_reuse=True)
    local = MCTSAgent("mcts_24", NetworkEvaluator(net, GAME), config, seed=7)
    served = MCTSAgent("mcts_24", ServedEvaluator(PreparedNetwork(net), GAME), config, seed=7)
    assert_the_same_moves(local, served, games=4, moves=5)


class DeferredServer:
    """A server whose answers are computed only when a client waits for them, with a log of sends and waits."""

    def __init__(self, net):
        self.network = PreparedNetwork(net)
        self.log = []

    def submit(self, observations):
        request = len(self.log)
        self.log.append(("send", request, len(observations)))

        def wait():
            self.log.append(("wait", request, len(observations)))
            return self.network(observations)

        return wait


@pytest.mark.parametrize("options", [{}, {"leaves_per_game": 2, "dirichlet_epsilon": 0.25, "tree_reuse": True}])
def test_an_asynchronous_evaluator_keeps_two_groups_of_games_in_flight_with_the_same_moves(options):
    net = tiny_net(6)
    server = DeferredServer(net)
    config = MCTSConfig(16, **options)
    local = MCTSAgent("mcts_16", NetworkEvaluator(net, GAME), config, seed=3)
    served_evaluator = ServedEvaluator(server.network, GAME, submit=server.submit)
    served = MCTSAgent("mcts_16", served_evaluator, config, seed=3)
    assert served_evaluator.asynchronous and not getattr(local.evaluator, "asynchronous", False)
    assert_the_same_moves(local, served, games=5, moves=4)
    # Every wait found the other group's batch already sent: two requests were in flight at each.
    in_flight, most = set(), 0
    for event, request, _ in server.log:
        if event == "send":
            in_flight.add(request)
        else:
            most = max(most, len(in_flight))
            in_flight.discard(request)
    assert most == 2 and not in_flight
    if "leaves_per_game" not in options:  # one leaf per game: a batch's rows count its games
        sizes = [rows for event, _, rows in server.log if event == "send"]
        # Groups of three games and of two; all five only when a move's fresh roots are expanded.
        assert set(sizes) <= {1, 2, 3, 5} and sizes.count(5) == 4 and {2, 3} <= set(sizes)
    assert served_evaluator.stats()["leaves"] == local.evaluator.stats()["leaves"]


def test_the_job_config_decides_and_when_it_is_silent_the_node_setting_does():
    for mode in ("auto", "on", "off"):
        for gpu in (False, True):
            assert choose_served(True, mode, gpu) and not choose_served(False, mode, gpu)
    assert choose_served(None, "auto", True) and not choose_served(None, "auto", False)
    assert choose_served(None, "on", False), "on: served on a CPU node"
    assert not choose_served(None, "off", True), "off: in process on a GPU node"
    with pytest.raises(ValueError):
        choose_served(None, "sometimes", True)


def test_workers_reserve_a_cpu_each_bounded_by_what_the_node_has_free():
    assert plan_workers(None, node_cpus=16, free_cpus=15) == (15, 1.0), "default: the node's CPUs minus one"
    assert plan_workers(None, node_cpus=16, free_cpus=4.5) == (4, 1.0), "no more than are free"
    assert plan_workers(8, node_cpus=16, free_cpus=15) == (8, 1.0)
    assert plan_workers(8, node_cpus=16, free_cpus=3) == (3, 1.0), "an explicit count is bounded too"
    assert plan_workers(None, node_cpus=1, free_cpus=0) == (1, 0.0), "none free: one on the coordinator's CPU"
    assert plan_workers(4, node_cpus=2, free_cpus=0.5) == (1, 0.0)


def _peer(node_id: str, ray_node: str | None, state: str = "alive") -> dict:
    return {"node_id": node_id, "ray_node_id": ray_node, "state": state}


def test_a_spread_job_goes_to_the_other_alive_orchestrator_nodes_once_per_ray_node():
    peers = [_peer("home", "r0"), _peer("b", "r1"), _peer("a", "r1"), _peer("c", "r2", "suspect"),
             _peer("d", "r3", "dead"), _peer("e", "r4"), _peer("f", None), _peer("g", "r5")]
    alive = ["r0", "r1", "r2", "r3", "r4", "r6"]  # r5's Ray node is gone; r6 hosts no orchestrator node
    assert spread_nodes(peers, alive, home_ray_node="r0") == {"r1": "a", "r4": "e"}
    assert spread_nodes([_peer("home", "r0")], ["r0"], "r0") == {}, "a node alone spreads nowhere"


def test_each_other_node_takes_a_worker_per_free_cpu_but_one_and_none_without_one():
    free = {"r1": 4.0, "r2": 1.5, "r3": 0.5, "r4": 0.0, "r5": 2.0}
    assert plan_spread(None, free) == {"r1": 3, "r2": 1, "r5": 1}, "one CPU left for evaluation where there are two"
    assert plan_spread(2, free) == {"r1": 2, "r2": 1, "r5": 1}, "`workers` caps each node"
    assert plan_spread(None, {}) == {}


def test_a_replacement_stays_on_its_node_while_alive_else_goes_where_a_cpu_is_free_else_home():
    free = {"home": 0.0, "r1": 1.0, "r2": 3.0}
    assert place_replacement("r1", 1.0, ["home", "r1", "r2"], free, "home") == ("r1", 1.0), "its CPU is free again"
    assert place_replacement("home", 0.0, ["home", "r2"], free, "home") == ("home", 0.0), "the home worker's own terms"
    assert place_replacement("r3", 1.0, ["home", "r1", "r2"], free, "home") == ("r2", 1.0), "the most CPUs free"
    assert place_replacement("r3", 1.0, ["home", "r1"], {"r1": 0.2, "home": 0.0}, "home") == ("home", 0.0), \
        "nowhere free: the job's node, on the coordinator's CPU"
    assert place_replacement("r3", 1.0, ["home"], {"home": 2.0}, "home") == ("home", 1.0)
