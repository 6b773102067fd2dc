"""Self-play throughput: batched leaf evaluation against one leaf per call and against the bare network.

One run, one set of start positions (seeded random openings):

  (a) network MCTS self-play, every game's leaves batched into one forward pass per round
  (b) the same agent and games, one leaf per network call
  (c) the bare network on random inputs at (a)'s batch size: the ceiling for (a)
  (d) rollout MCTS (`mcts_<sims>`, no network) against OpenSpiel's Python and C++ MCTSBot with
      RandomRolloutEvaluator, one position at a time, same simulation and rollout counts, the
      three interleaved position by position, medians over `--rollout-repeats` rounds
  (e) tree reuse: network PUCT (with self-play's Dirichlet noise) and Gumbel self-play with and
      without reuse at the same budget (root visits per move, carried ones included), the same
      games and start positions, runs interleaved: simulations carried over per move and the
      ratio of positions/s

Targets: (a)/(b) >= 3x and (a)/(c) >= 0.6 on leaf evaluations per second (each self-play
position costs `sims` leaf evaluations plus its root), and (d) ours/Python >= 2x and ours/C++ >= 1x
simulations/s.

    .venv/bin/python benchmarks/selfplay.py                 # CPU, about a minute on 2 cores
    .venv/bin/python benchmarks/selfplay.py --device cuda   # GPU: larger batches pay off more
    .venv/bin/python benchmarks/selfplay.py --parts reuse   # only (e)
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import pyspiel
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from open_spiel.python.algorithms import mcts as openspiel_mcts  # noqa: E402

from orchestrator.nn.resnet import PolicyValueNet, ResNetConfig  # noqa: E402
from orchestrator.nn.serving import PRECISIONS, serving_dtype  # noqa: E402
from orchestrator.play.evaluators import NetworkEvaluator, RolloutEvaluator  # noqa: E402
from orchestrator.play.games import BUILTIN  # noqa: E402
from orchestrator.play.gumbel import GumbelAgent, GumbelConfig  # noqa: E402
from orchestrator.play.mcts import BatchedSearch, MCTSAgent, MCTSConfig  # noqa: E402
from orchestrator.play.selfplay import SELFPLAY_DIRICHLET_EPSILON  # noqa: E402


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"GPU {torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def openings(game: pyspiel.Game, count: int, seed: int, max_random_plies: int = 8) -> list[pyspiel.State]:
    rng = random.Random(seed)
    states = []
    for i in range(count):
        state = game.new_initial_state()
        for _ in range(i % (max_random_plies + 1)):
            if state.is_terminal():
                break
            state.apply_action(rng.choice(state.legal_actions()))
        states.append(state)
    return states


def selfplay(agent: BatchedSearch, starts: list[pyspiel.State], plies: int) -> dict[str, float]:
    """Play `plies` moves in every game, all games in lock-step; returns rates over the whole run."""
    states = [s.clone() for s in starts]
    evaluator = agent.evaluator
    calls, leaves, network_s = evaluator.calls, evaluator.leaves, evaluator.network_seconds
    positions = 0
    simulations = carried = 0.0
    started = time.perf_counter()
    for _ in range(plies):
        live = [s for s in states if not s.is_terminal()]
        if not live:
            break
        for state, decision in zip(live, agent.select_many(live)):
            state.apply_action(decision.action)
            positions += 1
            simulations += decision.stats.get("simulations", 0.0)
            carried += decision.stats.get("carried_simulations", 0.0)
    elapsed = time.perf_counter() - started
    leaves = evaluator.leaves - leaves
    calls = evaluator.calls - calls
    return {
        "positions": positions, "seconds": elapsed, "positions_per_s": positions / elapsed,
        "evals_per_s": leaves / elapsed, "leaves_per_call": leaves / calls,
        "network_share": (evaluator.network_seconds - network_s) / elapsed,
        "simulations_per_move": simulations / positions, "carried_per_move": carried / positions,
    }


def reuse_comparison(
    make_agent, starts: list[pyspiel.State], plies: int, repeats: int
) -> dict[tuple[str, bool], dict[str, float]]:
    """(e): for each search, self-play with and without tree reuse, runs interleaved; the best of `repeats` each."""
    best: dict[tuple[str, bool], dict[str, float]] = {}
    for _ in range(repeats):
        for kind in ("mcts", "gumbel"):
            for reuse in (False, True):
                # A fresh agent per run: no tree survives from one run into the next.
                run = selfplay(make_agent(kind, reuse), starts, plies)
                if (kind, reuse) not in best or run["positions_per_s"] > best[kind, reuse]["positions_per_s"]:
                    best[kind, reuse] = run
    return best


def bare_network(evaluator: NetworkEvaluator, shape: tuple[int, ...], batch: int, seconds: float) -> float:
    """Forward passes on random inputs already on the device, in the network's precision and layout;
    positions per second."""
    network = evaluator.network
    x = network.prepare(torch.randn(batch, *shape))
    sync = torch.cuda.synchronize if network.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(3):
            network.model(x)
        sync()
        best = 0.0
        for _ in range(3):  # best of three windows: the figure is a ceiling, noise only lowers it
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds / 3:
                network.model(x)
                count += 1
            sync()
            best = max(best, count * batch / (time.perf_counter() - started))
    return best


def rollout_comparison(
    game: pyspiel.Game, positions: list[pyspiel.State], sims: int, seed: int, repeats: int
) -> dict[str, float]:
    """(d): medians over `repeats` rounds of simulations/s (wall clock) and of the per-round ratios
    ours / OpenSpiel, by wall clock and by this thread's CPU time (which other processes' load
    disturbs less). Each round has fresh bots seeded `seed + round` and interleaves the three
    position by position, so load from other processes falls on all three alike."""
    rounds: dict[str, list[float]] = {}
    for r in range(repeats):
        ours = MCTSAgent(f"mcts_{sims}", RolloutEvaluator(game, seed=seed + r), MCTSConfig(sims), seed=seed + r)
        python_bot = openspiel_mcts.MCTSBot(
            game, 2.0, sims, openspiel_mcts.RandomRolloutEvaluator(1, np.random.RandomState(seed + r)),
            random_state=np.random.RandomState(seed + r),
        )
        cpp_bot = pyspiel.MCTSBot(game, pyspiel.RandomRolloutEvaluator(1, seed + r), 2.0, sims, 1000, False, seed + r, False)
        steps = {"ours": lambda s: ours.select_many([s]), "openspiel_python": python_bot.step, "openspiel_cpp": cpp_bot.step}
        wall, cpu = dict.fromkeys(steps, 0.0), dict.fromkeys(steps, 0.0)
        for state in positions:
            for name, step in steps.items():
                started, started_cpu = time.perf_counter(), time.thread_time()
                step(state)
                cpu[name] += time.thread_time() - started_cpu
                wall[name] += time.perf_counter() - started
        started = time.perf_counter()
        ours.select_many(positions)
        wall["ours_lockstep"] = time.perf_counter() - started
        for name, elapsed in wall.items():
            rounds.setdefault(name, []).append(sims * len(positions) / elapsed)
        for other in ("openspiel_python", "openspiel_cpp"):
            rounds.setdefault(f"vs_{other}", []).append(wall[other] / wall["ours"])
            rounds.setdefault(f"vs_{other}_cpu", []).append(cpu[other] / cpu["ours"])
    return {name: float(np.median(values)) for name, values in rounds.items()}


def verdict(value: float, target: float) -> str:
    return "meets target" if value >= target else "BELOW target"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="network precision; auto as the system runs it (see orchestrator.nn.serving.serving_dtype)")
    parser.add_argument("--board-type", default="square8")
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--games", type=int, default=32, help="parallel games in (a) and (b)")
    parser.add_argument("--sims", type=int, default=32, help="simulations per move in (a) and (b)")
    parser.add_argument("--leaves-per-game", type=int, default=2, help="leaves per game per network call (virtual loss)")
    parser.add_argument("--plies", type=int, default=6, help="moves played in every game in (a) and (b)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of (a) and (b); the best counts")
    parser.add_argument("--rollout-sims", type=int, default=200)
    parser.add_argument("--rollout-positions", type=int, default=12)
    parser.add_argument("--rollout-repeats", type=int, default=5, help="interleaved rounds of (d); medians count")
    # Half the cores: OpenMP workers spin while they wait, and on a small or shared machine a thread
    # per core collapses throughput as soon as anything else runs (measured 100x on 2 busy cores).
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="torch CPU threads")
    parser.add_argument("--reuse-plies", type=int, default=8, help="moves played in every game in (e)")
    parser.add_argument("--parts", default="throughput,rollout,reuse",
                        help="comma-separated: throughput (a)-(c), rollout (d), reuse (e)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--served-workers", type=int, default=None, help="(f): search workers (default: CPUs minus one)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    game = BUILTIN.load(args.board_type)
    spec = BUILTIN.spec(args.board_type)
    config = ResNetConfig.for_game(spec, blocks=args.blocks, channels=args.channels)
    net = PolicyValueNet(config).eval()
    starts = openings(game, args.games, args.seed)
    print(f"machine: {machine(args.device)}")
    print(f"game: {args.board_type} ({spec.game_string}); network {config.blocks} blocks x {config.channels} channels "
          f"({sum(p.numel() for p in net.parameters()):,} parameters) on {args.device} in "
          f"{str(serving_dtype(args.precision, torch.device(args.device))).removeprefix('torch.')}")
    if "throughput" in parts:
        throughput(args, game, spec, net, starts)
    if "rollout" in parts:
        rollout_positions = openings(game, args.rollout_positions, args.seed + 1, max_random_plies=20)
        rates = rollout_comparison(game, rollout_positions, args.rollout_sims, args.seed,
                                   args.rollout_repeats)
        print()
        print(f"rollout MCTS, {args.rollout_sims} simulations x 1 random rollout, "
              f"{len(rollout_positions)} positions one at a time, median of {args.rollout_repeats} interleaved rounds:")
        for name in ("ours", "openspiel_python", "openspiel_cpp", "ours_lockstep"):
            label = {"ours_lockstep": "ours, all positions in one select_many"}.get(name, name)
            print(f"  {label:40}{rates[name]:10.0f} simulations/s")
        for other, name, target in (("openspiel_python", "Python", 2.0), ("openspiel_cpp", "C++", 1.0)):
            ratio = rates[f"vs_{other}"]
            print(f"  rollout mcts vs OpenSpiel {name + ' MCTS:':12}{ratio:5.2f}x  (CPU time {rates[f'vs_{other}_cpu']:4.2f}x)  "
                  f"(target >= {target:g})  {verdict(ratio, target)}")
    if "reuse" in parts:
        tree_reuse(args, game, net, starts)
    if "served" in parts:
        served_throughput(args, game, spec, net)


def tree_reuse(args: argparse.Namespace, game: pyspiel.Game, net: PolicyValueNet, starts: list[pyspiel.State]) -> None:
    def make_agent(kind: str, reuse: bool) -> BatchedSearch:
        evaluator = NetworkEvaluator(net, game, device=args.device, precision=args.precision)
        name = f"model:bench+{kind}_{args.sims}"
        if kind == "mcts":
            config = MCTSConfig(args.sims, leaves_per_game=args.leaves_per_game,
                                dirichlet_epsilon=SELFPLAY_DIRICHLET_EPSILON, tree_reuse=reuse)
            return MCTSAgent(name, evaluator, config, seed=args.seed)
        config = GumbelConfig(args.sims, leaves_per_game=args.leaves_per_game, tree_reuse=reuse)
        return GumbelAgent(name, evaluator, config, seed=args.seed)

    make_agent("mcts", True).select_many(starts[:2])  # warm-up
    runs = reuse_comparison(make_agent, starts, args.reuse_plies, args.repeats)
    print()
    print(f"(e) tree reuse: {args.games} games x {args.reuse_plies} plies, budget {args.sims} root visits per move "
          f"(carried + new), {args.leaves_per_game} leaves per game per call, best of {args.repeats}")
    print(f"{'':24}{'positions/s':>12}{'new sims/move':>15}{'carried/move':>14}{'seconds':>9}")
    for (kind, reuse), r in runs.items():
        label = f"{kind}_{args.sims} {'with' if reuse else 'without'} reuse"
        print(f"{label:24}{r['positions_per_s']:12.1f}{r['simulations_per_move']:15.1f}"
              f"{r['carried_per_move']:14.1f}{r['seconds']:9.1f}")
    for kind in ("mcts", "gumbel"):
        ratio = runs[kind, True]["positions_per_s"] / runs[kind, False]["positions_per_s"]
        print(f"  {kind} positions/s with / without reuse: {ratio:5.2f}x, "
              f"{runs[kind, True]['carried_per_move']:.1f} of {args.sims} visits carried per move")


def throughput(args: argparse.Namespace, game: pyspiel.Game, spec, net: PolicyValueNet, starts: list[pyspiel.State]) -> None:
    print(f"self-play: {args.games} games x {args.plies} plies, mcts_{args.sims} with the network, "
          f"{args.leaves_per_game} leaves per game per call")

    def agent(max_batch: int | None) -> MCTSAgent:
        evaluator = NetworkEvaluator(net, game, device=args.device, precision=args.precision)
        mcts_config = MCTSConfig(args.sims, leaves_per_game=args.leaves_per_game, max_batch=max_batch)
        return MCTSAgent(f"model:bench+mcts_{args.sims}", evaluator, mcts_config, seed=args.seed)

    batched_agent, single_agent = agent(None), agent(1)
    for warm in (batched_agent, single_agent):
        warm.select_many(starts[:2])
    # Best of `repeats` for (a) and (b), as (c) is a best of windows: other load only ever slows a run.
    batched = max((selfplay(batched_agent, starts, args.plies) for _ in range(args.repeats)), key=lambda r: r["evals_per_s"])
    single = max((selfplay(single_agent, starts, args.plies) for _ in range(args.repeats)), key=lambda r: r["evals_per_s"])
    batch = max(1, round(batched["leaves_per_call"]))
    ceiling = bare_network(batched_agent.evaluator, spec.observation_shape, batch, seconds=3.0)
    evals_per_position = batched["evals_per_s"] / batched["positions_per_s"]

    rows = [("(a) batched self-play", batched), ("(b) one leaf per call", single)]
    print()
    print(f"{'':24}{'positions/s':>12}{'leaf evals/s':>14}{'leaves/call':>13}{'net share':>11}{'seconds':>9}")
    for name, r in rows:
        print(f"{name:24}{r['positions_per_s']:12.1f}{r['evals_per_s']:14.0f}{r['leaves_per_call']:13.1f}"
              f"{r['network_share']:11.0%}{r['seconds']:9.1f}")
    print(f"{'(c) bare network':24}{ceiling / evals_per_position:12.1f}{ceiling:14.0f}{batch:13d}{'100%':>11}")

    batched_vs_single = batched["evals_per_s"] / single["evals_per_s"]
    batched_vs_ceiling = batched["evals_per_s"] / ceiling
    print(f"  (a)/(b) batched vs one leaf per call:   {batched_vs_single:5.2f}x  (target >= 3)    {verdict(batched_vs_single, 3.0)}")
    print(f"  (a)/(c) batched vs bare network:        {batched_vs_ceiling:5.2f}   (target >= 0.6)  {verdict(batched_vs_ceiling, 0.6)}")


def served_throughput(args: argparse.Namespace, game: pyspiel.Game, spec, net: PolicyValueNet) -> None:
    """(f) served: the whole node's self-play leaf evals/s through the inference server vs (c) at its mean batch.

    A local Ray instance, the node's InferenceServer (on --device, --threads torch threads), and
    the self-play job loop with `ServedGames`: `--served-workers` search workers (default: CPUs
    minus one), each playing --games games of mcts_<sims> cut after --plies moves. Workers start
    before the clock does; the figure is leaves over the job's own elapsed time.
    """
    import tempfile

    import ray

    from actors.inference import start_inference_server
    from actors.naming import NAMESPACE, inference_name
    from actors.selfplay_workers import ServedGames
    from orchestrator.nn.serving import ServingConfig
    from orchestrator.play.selfplay import SelfplayConfig, run_selfplay
    from orchestrator.play.served import network_key

    class BenchContext:  # the JobContext a job task would give: progress kept, never asked to stop
        job_id, node_id, attempt, games, device = "bench-served", "bench", 1, BUILTIN, "cpu"

        def __init__(self, data_dir: str) -> None:
            self.data_dir = Path(data_dir)

        def report(self, progress: dict) -> bool:
            return False

    workers = args.served_workers or max(1, (os.cpu_count() or 2) - 1)
    # A Ray instance of its own ("local"), never a cluster that happens to run on this machine.
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, namespace=NAMESPACE,
             logging_level="ERROR")
    try:
        server = start_inference_server("bench", ray.get_runtime_context().get_node_id(),
                                        ServingConfig(cpu_threads=args.threads), device=args.device)
        config = SelfplayConfig(board_type=args.board_type, agent=f"model:bench+mcts_{args.sims}", served=True,
                                num_games=args.games * workers * 2, parallel_games=args.games, max_moves=args.plies,
                                seed=args.seed, games_per_file=10_000, precision=args.precision)
        with tempfile.TemporaryDirectory() as data_dir:
            ctx = BenchContext(data_dir)
            games = ServedGames(config, ctx, net, workers=workers, server_names=[inference_name("bench")])
            ray.get([handle.advance.remote([]) for handle in games._workers.values()])  # started and warm
            result = run_selfplay(config, ctx, lambda c, x: games)
        stats = ray.get(server.info.remote())["networks"][network_key("bench", args.precision)]
        ray.kill(server, no_restart=True)
    finally:
        ray.shutdown()
    served_rate = result["eval_leaves"] / result["elapsed_s"]
    batch = max(1, round(stats["mean_batch"]))
    ceiling = bare_network(NetworkEvaluator(net, game, device=args.device, precision=args.precision), spec.observation_shape, batch, seconds=3.0)
    print()
    print(f"(f) served: {workers} search workers x {args.games} games, mcts_{args.sims}, {args.plies} plies per game, "
          f"one InferenceServer ({args.threads} torch threads)")
    print(f"  (a) served self-play, whole node:       {served_rate:8.0f} leaf evals/s  ({result['positions_per_s']:.1f} "
          f"positions/s, {result['elapsed_s']:.1f} s)")
    print(f"  server batches: mean {stats['mean_batch']:.1f} rows, {stats['requests_per_batch']:.2f} requests per batch, "
          f"largest {stats['largest_batch']:.0f}")
    print(f"  (c) bare network at batch {batch}:        {ceiling:8.0f} leaf evals/s")
    ratio = served_rate / ceiling
    print(f"  (a)/(c) served vs bare network:         {ratio:5.2f}   (target >= 0.6)  {verdict(ratio, 0.6)}")


if __name__ == "__main__":
    main()
