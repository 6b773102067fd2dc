"""Work placement and game analytics, on hand-built peers, jobs and records."""
from orchestrator.cluster.placement import jobs_to_reduce, pick_selfplay_node, pick_training_node
from orchestrator.play.analytics import Tally, search_stats


def _peer(node_id, state="alive", gpus=0, load=0.0, jobs=()):
    return {"node_id": node_id, "state": state, "resources": {"ray_gpus": gpus, "load_avg_1m": load},
            "running_jobs": [{"job_type": t, "state": "running"} for t in jobs]}


def test_only_alive_nodes_get_work_and_preferences_apply():
    peers = [_peer("a", load=0.1), _peer("b", state="retired"), _peer("c", state="dead"), _peer("d", load=2.0)]
    assert pick_selfplay_node(peers, {}) == "a"
    assert pick_selfplay_node(peers, {"d": 1}) == "d", "a registered worker with spare capacity first"
    assert pick_selfplay_node([_peer("a"), _peer("d", jobs=["selfplay"])], {"d": 1}) == "a", "its capacity is used"
    assert pick_selfplay_node([_peer("a"), _peer("g", gpus=1, load=3)], {}) == "g"
    assert pick_selfplay_node([_peer("b", state="retired")], {}) is None
    assert pick_training_node([_peer("a"), _peer("g", gpus=1, jobs=["training"]), _peer("h", gpus=1)]) == "h"
    assert pick_training_node([_peer("a", jobs=["selfplay"]), _peer("z")]) == "z"
    assert pick_training_node([_peer("g", gpus=1, jobs=["nnue_training"]), _peer("h", gpus=1)]) == "h"


def test_reduce_keeps_the_oldest():
    jobs = [{"job_id": f"j{i}", "job_type": "selfplay", "state": "running", "started_at": i} for i in range(4)]
    jobs.append({"job_id": "t", "job_type": "training", "state": "running", "started_at": 0})
    assert [j["job_id"] for j in jobs_to_reduce(jobs, target_jobs=1, factor=None)] == ["j3", "j2", "j1"]
    assert [j["job_id"] for j in jobs_to_reduce(jobs, target_jobs=None, factor=0.5)] == ["j3", "j2"]
    assert jobs_to_reduce(jobs, target_jobs=10, factor=None) == []


def _record(outcome, length, finished, termination="terminal"):
    return {"outcome": outcome, "length": length, "finished_at": finished, "termination": termination}


def test_tallies_merge_and_finish():
    one, two = Tally(), Tally()
    one.add_game(_record([1, -1], 10, 1000.0))
    one.add_game(_record([0, 0], 20, 1060.0, "max_length"))
    two.add_game(_record([-1, 1], 30, 4600.0))
    merged = Tally.from_dict(one.merge(two).to_dict())
    figures = merged.finish(now=4700.0)
    assert figures["games"] == 3 and figures["mean_length"] == 20
    assert figures["seat_win_rates"] == [0.5, 0.5]
    assert figures["terminations"] == {"terminal": 2, "max_length": 1}
    assert figures["games_last_hour"] == 1 and abs(figures["games_per_hour"] - 3 / 1.0) < 1e-9


def test_search_stats_weighting():
    jobs = [
        {"job_type": "selfplay", "node_id": "n", "state": "running",
         "progress": {"agent": "mcts_8", "simulations": 100, "mean_depth": 2.0, "simulations_per_s": 50,
                      "eval_network_calls": 10, "eval_leaves": 40, "eval_evals_per_s": 20, "positions": 5,
                      "carried_simulations": 60}},
        {"job_type": "selfplay", "node_id": "n", "state": "completed",
         "progress": {"agent": "mcts_8", "simulations": 300, "mean_depth": 4.0, "simulations_per_s": 99,
                      "eval_network_calls": 30, "eval_leaves": 40, "carried_simulations": 40}},
        {"job_type": "benchmark", "node_id": "n", "state": "running", "progress": {}},
    ]
    [entry] = search_stats(jobs)
    assert entry["jobs"] == 2 and entry["running_jobs"] == 1 and entry["simulations_per_s"] == 50
    assert entry["mean_depth"] == 3.5 and entry["leaves_per_network_call"] == 2.0
    # 100 of the 500 root visits came from reused trees
    assert entry["carried_simulations"] == 100 and entry["carried_share"] == 0.2
