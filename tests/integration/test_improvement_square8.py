"""Issue 10's proof on the default game: a short improvement run on square8 (Othello 8x8) through
the API, on the real cluster's CPUs, in which the promoted model beats the untrained network under
the same search by SPRT.

One cycle from scratch: `GAMES` self-play games of `mcts_8` (random rollouts: the board has no best
network yet), a 1-block 16-channel net trained on them for 2 epochs, starting from the untrained
network that the run registers as the board's first best (same seed), then gating: an SPRT of the
candidate against that untrained network, both driving `SEARCH` with network leaves, in
colour-swapped pairs after 4 random plies. The promotion must be that SPRT accepting H1, and the
non-regression SPRT after it must keep the new best. (test_improvement_api.py covers the rest of the
loop - rejection, automatic and manual rollback, the views - on tic-tac-toe, where it is quicker.)

Budgets. The same steps run in one process (self-play, training, a 100-game paired match under
`mcts_32`, 4 opening plies) gave the trained net scores of 0.74, 0.85 and 0.90 against the untrained
one for seeds 1, 4 and 3. Under `mcts_16` the same nets scored less (0.64 with 384 games; a bigger
search lets a better value head count for more), and at 2 opening plies a match has only 12
openings, each replayed identically by these deterministic searches. At a true score of 0.74 the
SPRT here ([0, 100] Elo, alpha = beta = 0.05, checked every 4 games, 200 games at most) accepts H1
in 99.95% of 2000 simulated tests, after 35 games on average; at 0.70, 99.7%. In the cluster it
decided H1 within 24-32 games (21 wins to 3 in 24, for one); the run itself took 100-120 s on the shared 2-core box
under a load average of 30-50 (self-play about 25 s, training 10 s, both SPRTs about 45 s).
"""
from __future__ import annotations

import uuid

from tests.harness import wait_until
from tests.integration.test_improvement_api import _leader, _post

BOARD = "square8"
SEARCH = "mcts_32"
GAMES = 256
SELFPLAY = {"bootstrap_agent": "mcts_8", "parallel_games": 128}
TRAINING = {"blocks": 1, "channels": 16, "epochs": 2.0, "batch_size": 64, "lr": 3e-3, "seed": 2, "report_every": 100}
GATING = {"search": SEARCH, "elo0": 0, "elo1": 100, "max_games": 200, "regression_elo0": -100, "regression_elo1": 0,
          "regression_max_games": 200, "opening_plies": 4}
RUN_TIMEOUT_S = 600  # a fail-safe for a starved machine: the run takes about 2 minutes here


def test_a_short_square8_run_promotes_a_model_that_beats_the_untrained_network_by_sprt(gateways):
    node = _leader(gateways)
    before = node.get("/rollback/status", params={"board_type": BOARD}).json()["current_best"].get(BOARD)
    assert before is None, f"the session's {BOARD} ledger must start empty (no other test promotes on it): {before}"
    run_id = f"sq8-{uuid.uuid4().hex[:6]}"
    body = {"run_id": run_id, "board_type": BOARD, "cycles": 1, "games_per_cycle": GAMES, "seed": 1,
            "selfplay": SELFPLAY, "training": TRAINING, "gating": GATING}
    try:
        started = _post(node, "/improvement/start", body)
        assert started.status_code == 200, started.text
        wait_until(lambda: node.get("/improvement/status", params={"run_id": run_id}).json()["state"] != "running",
                   timeout_s=RUN_TIMEOUT_S, interval_s=1.0, what=f"run {run_id} finished")
    finally:
        node.post("/improvement/cancel", json={"run_id": run_id})

    status = node.get("/improvement/status", params={"run_id": run_id}).json()
    assert status["state"] == "finished", (status["error"], status["errors"])
    (cycle,) = node.get("/improvement_cycles/status", params={"run_id": run_id}).json()["cycles"]
    untrained, trained = f"{run_id}-untrained", cycle["candidate"]
    summary = {k: cycle[k] for k in ("outcome", "gating_llr", "gating_bounds", "gating_games", "elo_delta", "note")}
    assert cycle["outcome"] == "promoted" and cycle["decision"] == "promote", summary
    assert cycle["games"] == GAMES and cycle["selfplay_agent"] == "mcts_8" and cycle["baseline"] == untrained

    # The evidence: an SPRT of the trained net against the untrained one, the same search on both sides.
    ledger = node.get("/rollback/status", params={"board_type": BOARD}).json()
    assert ledger["current_best"][BOARD] == trained
    events = ledger["history"][BOARD]
    assert [(e["kind"], e["model_id"]) for e in events] == [
        ("initial", untrained), ("promotion", trained), ("non_regression_passed", trained)]
    proof = events[1]["evidence"]
    assert proof["agent_a"] == f"model:{trained}+{SEARCH}" and proof["agent_b"] == f"model:{untrained}+{SEARCH}"
    assert proof["decision"] == "H1" and proof["llr"] >= proof["upper_bound"] and proof["elo0"] == GATING["elo0"]
    assert proof["games"] <= GATING["max_games"] and proof["wins"] > proof["losses"] and proof["elo"] > 0, proof
    assert sum(proof["pentanomial"]) * 2 == proof["games"], "played in colour-swapped pairs"
    regression = events[2]["evidence"]
    assert regression["decision"] == "H1" and regression["agent_b"] == f"model:{untrained}+{SEARCH}", regression

    # What was compared: the untrained network the candidate was trained from, and the candidate.
    models = {m["model_id"]: m for m in node.get("/models", params={"board_type": BOARD}).json()["models"]}
    assert models[untrained]["metrics"]["untrained"] is True and models[untrained]["status"] == "archived"
    # The first cycle's training is commissioned in the same step that registers the baseline, so it
    # may start parentless - from the same seed, hence the same weights.
    assert models[trained]["status"] == "best" and models[trained]["parent"] in (None, untrained)
    seeds = [models[m]["training_config"]["seed"] for m in (trained, untrained)]
    assert seeds == [TRAINING["seed"]] * 2, seeds
    assert models[trained]["data_window"]["game_count"] == GAMES
