"""Evaluation throughput: a 2-agent match played on the Ray cluster against the same games played by a
bare loop in one process, in the same run.

(a) the cluster: the match's colour-swapped pairs in batches of `BATCH_GAMES`, as the TournamentActor
    hands them out: `play_batch` Ray tasks, one CPU each, as many at once as the cluster has CPUs
    (workers warmed up first; storing the results is not timed)
(b) the bare loop: the same batches of games, one after another, in this process (the same agents,
    seeds and batching as a task, without Ray), so the ratio is what spreading them over CPUs buys

Target: (a)/(b) >= 0.7 x the number of CPUs. On a shared machine the other load counts against (a),
so the machine's load average is printed with the figures.

    .venv/bin/python benchmarks/evaluation.py                  # all local CPUs, ~1-2 minutes
    .venv/bin/python benchmarks/evaluation.py --games 64 --agents openspiel_mcts_400,mcts_32
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.eval_tasks import build_agents, play_batch  # noqa: E402
from actors.tournament import BATCH_GAMES  # noqa: E402
from orchestrator.play.evaluation import play_games  # noqa: E402
from orchestrator.play.evaluation_runs import Tournament, derived_seed  # noqa: E402
from orchestrator.play.games import BUILTIN  # noqa: E402


def batches_of(schedule):
    return [schedule[i:i + BATCH_GAMES] for i in range(0, len(schedule), BATCH_GAMES)]


def cluster_rate(board: str, schedule, cpus: int) -> tuple[float, int]:
    batches = batches_of(schedule)
    started = time.perf_counter()
    waiting, in_flight, played = list(batches), [], 0
    while waiting or in_flight:
        while waiting and len(in_flight) < cpus:
            batch = waiting.pop(0)
            in_flight.append(play_batch.remote(board, BUILTIN, [g.__dict__ for g in batch],
                                               derived_seed(batch[0].game_id)))
        ready, in_flight = ray.wait(in_flight, num_returns=1)
        played += sum(len(r["played"]) for r in ray.get(ready))
    return played / (time.perf_counter() - started), played


def bare_rate(board: str, schedule) -> tuple[float, int]:
    game = BUILTIN.load(board)
    started = time.perf_counter()
    played = 0
    for batch in batches_of(schedule):
        names = {g.first for g in batch} | {g.second for g in batch}
        agents = build_agents(names, board, BUILTIN, derived_seed(batch[0].game_id))
        played += len(play_games(game, agents, batch))
    return played / (time.perf_counter() - started), played


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--board", default="connect_four")
    parser.add_argument("--agents", default="openspiel_mcts_1000,mcts_64")
    parser.add_argument("--games", type=int, default=48, help="games in the match (colour-swapped pairs)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    args = parser.parse_args()
    first, second = args.agents.split(",")
    schedule = Tournament.round_robin("bench", args.board, [first, second], args.games, 2, "round_robin", 0.0).schedule()

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
    warm = schedule[:1]
    ray.get([play_batch.remote(args.board, BUILTIN, [g.__dict__ for g in warm], 0) for _ in range(args.cpus)])
    bare_rate(args.board, warm)  # the same warm-up for (b): imports and the game's first load
    load_before = os.getloadavg()[0]
    a, played_a = cluster_rate(args.board, schedule, args.cpus)
    b, played_b = bare_rate(args.board, schedule)
    load_after = os.getloadavg()[0]
    ray.shutdown()
    ratio = a / b
    print(f"{args.board}: {first} vs {second}, {args.games} games, {args.cpus} CPUs, "
          f"load average {load_before:.1f} -> {load_after:.1f}")
    print(f"(a) cluster    {a:7.3f} games/s ({played_a} games)")
    print(f"(b) bare loop  {b:7.3f} games/s ({played_b} games)")
    print(f"(a)/(b) = {ratio:.2f}x = {ratio / args.cpus:.2f} x CPUs (target >= 0.7 x CPUs)")


if __name__ == "__main__":
    main()
