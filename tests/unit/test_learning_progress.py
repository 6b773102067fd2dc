"""Learning makes agents stronger, end to end, on square8 (Othello 8x8) with small budgets (issue 5).

These run the real code paths: self-play jobs, dataset replay, the training loop, checkpoints,
batched search driven by a network, CMA-ES over the heuristic agent's weights and the paired
fitness match. Everything is seeded, so each test plays the same games every time; the sizes
were picked so the margin is wide across seeds (see each docstring), not so one seed passes.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from actors.tunables import CMAES_TUNABLES
from orchestrator.learn.cmaes import CMAESConfig, CMAESRun, tunable_params
from orchestrator.learn.cmaes_games import evaluate_candidate, play_fitness_match
from orchestrator.learn.model_records import DataWindow, game_ids_digest
from orchestrator.learn.training import PolicyValueConfig, build_dataset, read_window, scan_window, train_policy_value
from orchestrator.nn.checkpoint import load_checkpoint, model_path, save_checkpoint
from orchestrator.nn.resnet import PolicyValueNet, ResNetConfig
from orchestrator.play.agents import AgentContext, parse_agent
from orchestrator.play.games import BUILTIN, GameCatalog
from orchestrator.play.heuristic import HEURISTIC_PARAMS, make_heuristic_agent
from orchestrator.play.mcts import build_mcts
from orchestrator.play.records import CODE_VERSION, game_files
from orchestrator.play.selfplay import SelfplayConfig, job_directory, run_selfplay

torch.set_num_threads(1)

BOARD = "square8"


@dataclass
class Context:
    """The JobContext protocol: progress is recorded, stop is never asked."""

    data_dir: Path
    job_id: str = "progress"
    node_id: str = "node-a"
    attempt: int = 1
    games: GameCatalog = BUILTIN
    device: str = "cpu"
    reports: list[dict[str, Any]] = field(default_factory=list)

    def report(self, progress: dict[str, Any]) -> bool:
        self.reports.append(progress)
        return False


# -- CMA-ES ------------------------------------------------------------------------------------

CMAES_SEED = 0
# Every weight on the wrong side of zero, three quarters of the way to its bound: an evaluation
# that chases bad squares (X-squares, frontier) and gives corners away.
BAD_START = {name: -3.0 if default > 0 else 3.0 for name, (_, _, default) in HEURISTIC_PARAMS.items()}


@pytest.mark.slow
def test_cmaes_improves_heuristic_fitness_against_random_over_generations():
    """CMA-ES tuning all 7 heuristic weights against `random` on square8: popsize 8, 6 generations,
    16 paired games per candidate (768 games, about 6-9 s here), from `BAD_START`.

    Fitness is noisy (16 games, fresh openings every generation), so the assertions use margins
    that held on every one of seeds 0-11 of this exact configuration: the last generation's mean
    fitness minus the first's was +0.29 to +0.56 (seed 0: 0.26 -> 0.64), its best minus the
    first's best +0.09 to +0.57 (seed 0: 0.59 -> 0.78), and cma's final mean weights scored +0.30
    to +0.75 more than `BAD_START` over the same 32 held-out games against random (seed 0: 0.03
    -> 0.78).
    """
    tunable = tunable_params("heuristic", CMAES_TUNABLES)
    config = CMAESConfig(
        run_id="progress", params={name: (low, high) for name, (low, high, _) in tunable.items()},
        generations=6, popsize=8, sigma0=0.3, seed=CMAES_SEED, initial=BAD_START,
        board_type=BOARD, agent="heuristic", baseline="random", games_per_candidate=16,
    )
    run = CMAESRun.start(config, CMAES_TUNABLES)
    assert run.mean_params() == pytest.approx(BAD_START)
    now = 0.0
    while not run.finished:
        for candidate in run.next_candidates(now):
            outcome = evaluate_candidate(config, candidate, CMAES_TUNABLES)
            now += 1.0
            assert outcome.games == 16
            assert run.submit(candidate.candidate_id, candidate.generation, outcome.fitness, outcome.games, now).accepted
    status = run.status(now)
    assert status.finished and status.stop_reason == "generations" and status.evaluations_done == 6 * 8
    first, last = status.history[0], status.history[-1]
    assert last.mean_fitness >= first.mean_fitness + 0.2, [(h.best_fitness, h.mean_fitness) for h in status.history]
    assert last.best_fitness > first.best_fitness

    # The tuned weights, not just lucky candidates: cma's mean against the start on the same openings.
    def held_out(weights: dict[str, float]) -> float:
        outcome = play_fitness_match(BOARD, lambda seed: make_heuristic_agent(weights, seed), "random", 32,
                                     seed=10**6 + CMAES_SEED)
        assert outcome.games == 32
        return outcome.fitness

    start_score, tuned_score = held_out(BAD_START), held_out(status.mean_params)
    assert tuned_score >= start_score + 0.2, (start_score, tuned_score, status.mean_params)


# -- policy/value training -----------------------------------------------------------------------

TRAINING_SEED = 1
SELFPLAY_AGENT = "mcts_8"
SELFPLAY_GAMES = 512
MATCH_SEARCH = "mcts_32"
MATCH_GAMES = 40


@pytest.mark.slow
def test_network_trained_on_selfplay_beats_the_untrained_network_with_the_same_search(tmp_path):
    """Self-play job -> dataset -> training -> checkpoint -> match, on square8 with small budgets.

    Budgets (about 60-80 s here, single-threaded): 512 self-play games of `mcts_8` (random
    rollouts, about 45 s); a 2-block, 32-channel net (the catalogue default for 8x8 is 6x64)
    trained for 2 epochs (~970 steps of 64); then 40 games (20 openings, colours swapped in
    each pair) of the trained net + `mcts_32` against the same net untrained (same init seed)
    + `mcts_32`.

    Why `mcts_8` and not the issue's `mcts_200`: at a CPU test's budget what makes the net
    stronger is the number of games, not the search behind each one. Measured here with the same
    kind of match: 24 games of `mcts_200` (~45 s of self-play) or 96 of `mcts_50` (~45 s) gave
    nets that only learned which squares are usually legal (on held-out games their policy,
    restricted to legal moves, was no better than uniform and their value MSE was above 1,
    worse than predicting 0); against the untrained net they scored 0.15 to 0.90 depending on
    the seeds, below 0.5 about as often as above. 512 games of `mcts_8` take the same ~45 s.
    Trained 1 epoch they scored 0.48 to 0.85; trained 2 epochs (this test) the trained net scored
    0.60 to 0.91 (median 0.81) over `TRAINING_SEED` 0-8 of this exact test, 0.81 with seed 1.
    `mcts_200` data in that quantity would take several minutes of self-play here.
    """
    ctx = Context(tmp_path)
    result = run_selfplay(SelfplayConfig(board_type=BOARD, agent=SELFPLAY_AGENT, num_games=SELFPLAY_GAMES,
                                         parallel_games=128, seed=TRAINING_SEED), ctx)
    assert result["complete"] and result["games_done"] == SELFPLAY_GAMES

    files = game_files(job_directory(tmp_path, BOARD, ctx.job_id))
    scan = scan_window(tmp_path, files)
    ids = [g.game_id for g in scan.games]
    dataset = build_dataset(BOARD, list(read_window(scan.paths, ids)))
    window = DataWindow(files=scan.files, game_count=len(ids), game_ids_digest=game_ids_digest(ids))
    assert window.game_count == SELFPLAY_GAMES and scan.stats.skipped == 0
    assert dataset.skipped == {} and len(dataset.game_ids) == SELFPLAY_GAMES and len(dataset) > 20 * SELFPLAY_GAMES

    torch.manual_seed(TRAINING_SEED)
    network = PolicyValueNet(ResNetConfig.for_game(BUILTIN.spec(BOARD), blocks=2, channels=32))
    untrained = copy.deepcopy(network)
    metrics = train_policy_value(network, dataset, PolicyValueConfig(batch_size=64, lr=1e-3, epochs=2.0,
                                                                     seed=TRAINING_SEED))
    assert metrics["final_loss"] < metrics["initial_loss"] - 1.0, metrics

    # Both nets go through checkpoints and are loaded the way a search agent loads a model id.
    save_checkpoint(model_path(tmp_path, "untrained"), untrained, code_version=CODE_VERSION)
    save_checkpoint(model_path(tmp_path, "trained"), network, code_version=CODE_VERSION, parent="untrained",
                    data_window=window.to_dict(), extra={"metrics": metrics})

    def load_model(model_id: str) -> PolicyValueNet:
        return load_checkpoint(model_path(tmp_path, model_id)).model

    def trained_agent(seed: int):
        return build_mcts(parse_agent(f"model:trained+{MATCH_SEARCH}"),
                          AgentContext(board_type=BOARD, seed=seed, load_model=load_model))

    outcome = play_fitness_match(BOARD, trained_agent, f"model:untrained+{MATCH_SEARCH}", MATCH_GAMES,
                                 seed=TRAINING_SEED, load_model=load_model)
    score, games = outcome.fitness, outcome.games
    assert games == MATCH_GAMES
    assert score > 0.5, f"trained net scored {score:.3f} against the untrained one over {games} games"
