"""Training throughput: the `training` job's own code path against a bare PyTorch loop, same run.

One set of real self-play games (generated here, or read from --games-dir), then, interleaved
`--repeats` times after a shared warm-up:

  (a) the training job as a node runs it (`orchestrator.learn.jobs.run_training`: newest-games
      window, replay into tensors, `train_policy_value` with its progress reports, checkpoint);
      its samples/s is the training loop's own figure
  (b) a bare PyTorch loop over the same tensors on the same device: the same network, batch size,
      optimiser and number of steps, a fresh permutation per epoch, one device sync at the end
  (c) the training job again with `max_samples_in_memory` a quarter of the positions, so that it
      streams its samples from the memory-mapped cache a block at a time (bounded memory)

Target: (a)/(b) >= 0.9 on samples/s (the median of the repeats of each); (c)/(b) is the price
of bounded memory, reported.

    .venv/bin/python benchmarks/training.py                        # CPU, about a minute on 2 cores
    .venv/bin/python benchmarks/training.py --device cuda --steps 400 --batch-size 512
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.learn.jobs import PolicyValueJobConfig, newest_games, run_training  # noqa: E402
from orchestrator.learn.training import build_dataset  # noqa: E402
from orchestrator.nn.resnet import PolicyValueNet, ResNetConfig  # noqa: E402
from orchestrator.play.games import BUILTIN, GameCatalog  # noqa: E402
from orchestrator.play.selfplay import SelfplayConfig, run_selfplay  # noqa: E402


@dataclass
class Context:
    """The job context a node gives the job, minus Ray: reports are kept, never a stop."""

    data_dir: Path
    device: str
    job_id: str = "bench"
    node_id: str = "bench-node"
    attempt: int = 1
    games: GameCatalog = BUILTIN
    reports: list[dict[str, Any]] = field(default_factory=list)

    def report(self, progress: dict[str, Any]) -> bool:
        self.reports.append(progress)
        return False


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"GPU {torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def bare_loop(net_config: ResNetConfig, tensors: tuple[torch.Tensor, ...], steps: int, batch: int, lr: float,
              seed: int, device: str) -> float:
    """Samples/s of the plainest fast loop: no progress, no per-step host sync."""
    torch.manual_seed(seed)
    model = PolicyValueNet(net_config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    samples = tensors[0].shape[0]
    generator = torch.Generator().manual_seed(seed)
    order, cursor = torch.randperm(samples, generator=generator).to(device), 0
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        if cursor + batch > samples:
            order, cursor = torch.randperm(samples, generator=generator).to(device), 0
        index = order[cursor:cursor + batch]
        cursor += batch
        batch_obs, batch_pi, batch_z = (t.index_select(0, index) for t in tensors)
        logits, values = model(batch_obs)
        loss = -(batch_pi * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean() + F.mse_loss(values, batch_z)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--board-type", default="square8")
    parser.add_argument("--games", type=int, default=24, help="self-play games to generate (and train on)")
    parser.add_argument("--agent", default="mcts_4", help="the self-play agent that generates them")
    parser.add_argument("--games-dir", type=Path,
                        help="a data directory that already holds the games (timed runs save checkpoints there)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3, help="runs of (a) and of (b), interleaved; medians count")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.games_dir is not None:
        run(args, args.games_dir)
        return
    with tempfile.TemporaryDirectory(prefix="bench-training-") as scratch:
        started = time.perf_counter()
        run_selfplay(SelfplayConfig(board_type=args.board_type, agent=args.agent, num_games=args.games,
                                    parallel_games=args.games), Context(Path(scratch), "cpu", job_id="bench-games"))
        print(f"self-play: {args.games} games of {args.board_type} by {args.agent} in "
              f"{time.perf_counter() - started:.1f}s")
        run(args, Path(scratch))


def run(args: argparse.Namespace, data_dir: Path) -> None:
    window = newest_games(data_dir, args.board_type, args.games)
    dataset = build_dataset(args.board_type, window.records())
    net_config = ResNetConfig.for_game(BUILTIN.spec(args.board_type))
    tensors = tuple(torch.from_numpy(column).to(args.device)
                    for column in (dataset.observations, dataset.policies, dataset.values))
    job_config = PolicyValueJobConfig(board_type=args.board_type, steps=args.steps, batch_size=args.batch_size,
                                      lr=args.lr, window_games=args.games)
    print(f"machine: {machine(args.device)}")
    print(f"data: {len(window.game_ids)} games, {len(dataset)} positions; network {net_config.blocks} blocks x "
          f"{net_config.channels} channels; {args.steps} steps of {args.batch_size}, Adam lr {args.lr}")

    bare_loop(net_config, tensors, max(3, args.steps // 10), args.batch_size, args.lr, 1, args.device)  # warm-up
    cap = max(args.batch_size, len(dataset) // 4)
    streaming_config = job_config.model_copy(update={"max_samples_in_memory": cap})
    job_rates, bare_rates, streaming_rates = [], [], []
    for repeat in range(args.repeats):
        result = run_training(job_config, Context(data_dir, args.device, job_id=f"bench-{repeat}"))
        job_rates.append(result["model"]["metrics"]["samples_per_s"])
        bare_rates.append(bare_loop(net_config, tensors, args.steps, args.batch_size, args.lr, 0, args.device))
        streamed = run_training(streaming_config, Context(data_dir, args.device, job_id=f"bench-stream-{repeat}"))
        metrics = streamed["model"]["metrics"]
        assert metrics["peak_samples_in_memory"] <= cap < metrics["dataset_samples"], metrics
        streaming_rates.append(metrics["samples_per_s"])
        print(f"  repeat {repeat + 1}: job {job_rates[-1]:9.0f} samples/s   bare {bare_rates[-1]:9.0f} samples/s   "
              f"streaming {streaming_rates[-1]:9.0f} samples/s")
    job, bare, streaming = (statistics.median(r) for r in (job_rates, bare_rates, streaming_rates))
    ratio = job / bare
    print()
    print(f"(a) training job       {job:9.0f} samples/s  (median of {args.repeats})")
    print(f"(b) bare PyTorch loop  {bare:9.0f} samples/s")
    print(f"(c) streaming job      {streaming:9.0f} samples/s  (at most {cap} of {len(dataset)} samples in memory)")
    print(f"(a)/(b) = {ratio:.3f}  (target >= 0.9)  {'PASS' if ratio >= 0.9 else 'MISS'}")
    print(f"(c)/(b) = {streaming / bare:.3f}  (the price of bounded memory)")


if __name__ == "__main__":
    main()
