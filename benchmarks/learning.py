"""The continuous pipeline from scratch on square8 for a fixed wall time, then the promoted network rated.

Starts a node exactly as a user does (`scripts/p2p_orchestrator.py`, an embedded Ray head, a fresh
data directory), starts the continuous pipeline over the API with the same settings `make run`
uses (orchestrator.gateway.routes_pipeline.AUTOSTART), lets it run for `--minutes`, stops it, and
plays two matches on the cluster with the best network at the same search budget per move as its
opponent: `model:<best>+mcts_<b1>` against `mcts_<b1>` (random rollouts) and
`model:<best>+mcts_<b2>` against OpenSpiel's C++ `openspiel_mcts_<b2>`. It prints the network's
Elo against each opponent with the 95% interval of the Bradley-Terry fit (anchor: the opponent),
and the untrained network's under the first budget for comparison, plus what the pipeline did.

    .venv/bin/python benchmarks/learning.py [--minutes 30] [--games 40] [--budget 200] [--reference-budget 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
POLL_S = 5.0


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(what: str, probe, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = probe()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(POLL_S)
    raise SystemExit(f"timed out waiting for {what}")


def _match(url: str, tid: str, agents: list[str], games: int, timeout_s: float) -> dict:
    body = {"tournament_id": tid, "agents": agents, "games_per_match": games, "board_type": "square8"}
    answer = requests.post(f"{url}/tournament/start", json=body, timeout=60)
    answer.raise_for_status()
    return _wait(f"tournament {tid}", lambda: (s := requests.get(f"{url}/tournament/status", params={
        "tournament_id": tid}, timeout=60).json().get("tournament", {})).get("state") == "finished" and s, timeout_s)


def _rating(url: str, agent: str, anchor: str) -> dict:
    table = requests.get(f"{url}/elo/table", params={"board_type": "square8", "anchor": anchor}, timeout=60).json()
    return next(row for row in table["rows"] if row["agent"] == agent)


def _show(label: str, row: dict) -> str:
    low = "-inf" if row["ci_low"] is None else f"{row['ci_low']:+.0f}"
    high = "+inf" if row["ci_high"] is None else f"{row['ci_high']:+.0f}"
    elo = "n/a (all wins or all losses)" if row["elo"] is None else f"{row['elo']:+.0f}"
    return (f"{label}: Elo {elo}, 95% [{low}, {high}] over {row['games']} games "
            f"(W/D/L {row['wins']}/{row['draws']}/{row['losses']})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30.0, help="wall time of the pipeline")
    parser.add_argument("--games", type=int, default=40, help="games per rating match (colours alternated)")
    parser.add_argument("--budget", type=int, default=200, help="simulations per move against mcts_<budget>")
    parser.add_argument("--reference-budget", type=int, default=1000,
                        help="simulations per move against openspiel_mcts_<reference-budget>")
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args()

    from orchestrator.gateway.routes_pipeline import AUTOSTART

    port = _port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "P2P_AUTOSTART_PIPELINE": ""}
        command = [sys.executable, str(ROOT / "scripts" / "p2p_orchestrator.py"), "--port", str(port),
                   "--node-id", "bench", "--data-dir", data_dir, "--no-dashboard"]
        if args.num_cpus:
            command += ["--num-cpus", str(args.num_cpus)]
        node = subprocess.Popen(command, env=env, cwd=ROOT)
        try:
            _wait("the node to lead", lambda: requests.get(f"{url}/health", timeout=5).json()["is_leader"], 180)
            body = {"run_id": "bench-learning", "board_type": "square8", **AUTOSTART}
            requests.post(f"{url}/pipeline/start", json=body, timeout=60).raise_for_status()
            started = time.monotonic()
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(POLL_S)
            requests.post(f"{url}/pipeline/stop", json={"run_id": "bench-learning"}, timeout=60).raise_for_status()
            summary = requests.get(f"{url}/trends/summary", params={"board_type": "square8"}, timeout=60).json()
            best = summary["current_best"]
            print(json.dumps({k: summary[k] for k in ("cycles_finished", "promotions", "rollbacks", "discards",
                                                      "games_total", "games_per_hour", "first_loss", "latest_loss",
                                                      "elo_chain")}, indent=1))
            if best is None:
                raise SystemExit("no best network after the pipeline ran (not even the untrained baseline)")
            untrained = "bench-learning-untrained"
            b1, b2 = args.budget, args.reference_budget
            timeout_s = 3600 * 4
            _match(url, "bench-vs-mcts", [f"model:{best}+mcts_{b1}", f"mcts_{b1}", f"model:{untrained}+mcts_{b1}"],
                   args.games, timeout_s)
            _match(url, "bench-vs-openspiel", [f"model:{best}+mcts_{b2}", f"openspiel_mcts_{b2}"], args.games,
                   timeout_s)
            print(f"pipeline: {args.minutes:g} min from scratch on square8; best network {best}")
            print(_show(f"model:{best}+mcts_{b1} vs mcts_{b1}", _rating(url, f"model:{best}+mcts_{b1}", f"mcts_{b1}")))
            if best != untrained:
                print(_show(f"untrained model+mcts_{b1} vs mcts_{b1}",
                            _rating(url, f"model:{untrained}+mcts_{b1}", f"mcts_{b1}")))
            print(_show(f"model:{best}+mcts_{b2} vs openspiel_mcts_{b2}",
                        _rating(url, f"model:{best}+mcts_{b2}", f"openspiel_mcts_{b2}")))
        finally:
            node.terminate()
            node.wait(60)


if __name__ == "__main__":
    main()
