"""CMA-ES through the API on a real cluster: a run evaluated by Ray tasks to the end, worker
submissions (bad, duplicate, external), and the result registered as a usable `heuristic@<id>`."""
import json

import ray

from actors.naming import pinned
from tests.harness import wait_until

BOARD = "square8"
PARAMS = {"corner": [-4, 4], "mobility": [-4, 4], "material": [-4, 4]}
RUN = {"board_type": BOARD, "agent": "heuristic", "params": PARAMS, "baseline": "random", "popsize": 4, "sigma0": 0.5,
       "games_per_eval": 4, "generations": 2, "eval_timeout_s": 60}
LEASE_TTL_S = 8.0


def _pair(gateways, prefix):
    # Leases long enough that a busy 2-core box does not change leaders mid-test (which would, rightly,
    # fence off what the first leader commissioned).
    voters = [f"{prefix}-a", f"{prefix}-b"]
    a = gateways.start(voters[0], gateways.ray_node_id(0), voters=voters, lease_ttl_s=LEASE_TTL_S)
    b = gateways.start(voters[1], gateways.ray_node_id(1), voters=voters, lease_ttl_s=LEASE_TTL_S)
    leader = wait_until(lambda: a.status()["leader_id"] == b.status()["leader_id"] and a.status()["leader_id"],
                        what="a leader")
    return (a, b) if leader == a.node_id else (b, a)


def _run(node, run_id):
    return node.get("/cmaes/status", params={"run_id": run_id}).json()["run"]


def _ask(node, path, body):
    """A leader-only call, retried while no leader is known (on a busy box a lease can lapse for a moment)."""
    answers = []  # a Response is falsy for any 4xx, so wait on the list, not the answer
    wait_until(lambda: answers.append(node.post(path, json=body)) or answers[-1].status_code != 503, timeout_s=30,
               what=f"{path} answered")
    return answers[-1]


def _raw(node, path, text):
    return node.post(path, data=text, headers={"Content-Type": "application/json"})


def test_a_run_completes_on_the_cluster_and_its_result_plays(gateways):
    leader, follower = _pair(gateways, "cm")
    # A fixed run_id fixes the openings, so the fitness values (and cma's path) are the same every time:
    # cma ends a run early on a flat generation (every candidate scoring alike), which some ids hit.
    started = _ask(follower, "/training/cmaes/start", {**RUN, "run_id": "cm-fixed"})
    assert started.status_code == 200, started.text
    assert started.headers["X-P2P-Leader"] == leader.node_id
    run_id = started.json()["run_id"]
    assert started.json()["run"]["generation"] == 0 and started.json()["run"]["popsize"] == 4
    again = _ask(leader, "/cmaes/start", {**RUN, "run_id": run_id})
    assert again.status_code == 200 and again.json()["created"] is False, "the same body is the same run"
    other = _ask(leader, "/cmaes/start", {**RUN, "run_id": run_id, "generations": 3})
    assert other.status_code == 409, "another body under the same run_id"

    seen = []
    run = wait_until(lambda: seen.append(r := _run(follower, run_id)) or (r["state"] == "finished" and r),
                     timeout_s=90, interval_s=0.2, what="CMA-ES run finished")
    assert any(r["pending"] > 0 or 0 < r["done"] for r in seen[:-1]), "progress was visible while it ran"
    assert run["stop_reason"] == "generations" and [h["generation"] for h in run["history"]] == [0, 1], run["history"]
    assert run["evaluations_done"] == 8 and run["games_done"] == 32 and run["errors"] == [] and run["saved"]
    assert 0 <= run["best_fitness"] <= 1 and set(run["best_params"]) == set(PARAMS)
    assert run["sigma"] > 0 and run["eta_s"] == 0

    forged = follower.post("/cmaes/evaluate", json={"run_id": run_id, "generation": 1,
                                                    "candidate_id": f"{run_id}-g1-c0",
                                                    "games": 4, "wins": 4, "draws": 0, "losses": 0})
    assert forged.status_code == 409 and "external" in forged.json()["error"], "the cluster evaluates this run itself"
    assert _run(leader, run_id)["evaluations_done"] == 8

    assert _ask(leader, "/cmaes/result", {"run_id": "nope"}).status_code == 404
    result = _ask(follower, "/cmaes/result", {"run_id": run_id})
    assert result.status_code == 200 and result.headers["X-P2P-Leader"] == leader.node_id, result.text
    model = result.json()["model"]
    assert result.json()["agent"] == f"heuristic@{model['model_id']}" and result.json()["created"] is True
    assert model["kind"] == "agent_params" and model["status"] == "candidate" and model["params"] == run["best_params"]
    assert model["metrics"]["best_fitness"] == run["best_fitness"]
    assert _ask(leader, "/cmaes/result", {"run_id": run_id}).json()["model"] == model, "finalising is idempotent"
    listed = follower.get("/models", params={"kind": "agent_params"}).json()["models"]
    assert model["model_id"] in {m["model_id"] for m in listed}

    # the tuned weights load from the registry record on another node and drive the heuristic there
    weights, legal = ray.get(_play_tuned.options(scheduling_strategy=pinned(follower.actors.ray_node_id)).remote(
        follower.node_id, str(follower.settings.node_dir()), result.json()["agent"]), timeout=60)
    assert {name: weights[name] for name in model["params"]} == model["params"] and legal


@ray.remote(num_cpus=0)
def _play_tuned(node_id, data_dir, agent_name):
    """What a job on that node does: its RayJobContext loads the model for the agent it builds."""
    from actors.tasks import RayJobContext
    from orchestrator.play.agents import AgentContext, make_agent
    from orchestrator.play.games import BUILTIN

    ctx = RayJobContext("probe", node_id, 1, data_dir, BUILTIN)
    agent = make_agent(agent_name, AgentContext(board_type=BOARD, load_model=ctx.load_model))
    state = BUILTIN.load(BOARD).new_initial_state()
    return agent.evaluator.weights, agent.select_many([state])[0].action in state.legal_actions()


def test_worker_submissions_bad_inputs_and_forced_result(gateways):
    leader, follower = _pair(gateways, "cw")
    run_id = _ask(leader, "/cmaes/start", {**RUN, "popsize": 2, "external_workers": True}).json()["run_id"]
    run = wait_until(lambda: (r := _run(leader, run_id))["pending"] == 2 and r, what="candidates handed out")
    first, second = run["candidates"]
    submit = {"run_id": run_id, "generation": 0, "candidate_id": first["candidate_id"], "games": 4, "wins": 3,
              "draws": 0, "losses": 1}

    for body, code in (({**submit, "run_id": "nope"}, 404), ({**submit, "candidate_id": "nope-g0-c9"}, 400),
                       ({**submit, "generation": 1}, 400), ({**submit, "wins": -1}, 400),
                       ({**submit, "draws": "two"}, 400), ({**submit, "fitness": "high"}, 400),
                       ({**submit, "generation": 2**63}, 400), ({**submit, "score": 1}, 400),
                       ({**submit, "games": 1, "wins": 1, "losses": 0}, 409),  # the run asks for 4 games
                       ({**submit, "wins": 4}, 409),  # 4 + 0 + 1 is not 4
                       ({**submit, "fitness": 1.0}, 409)):  # 3 wins of 4 score 0.75
        answer = follower.post("/cmaes/evaluate", json=body)
        assert answer.status_code == code, (body, answer.text)
    for text in ('"fitness": NaN}', '"fitness": Infinity}'):
        answer = _raw(follower, "/cmaes/evaluate", json.dumps(submit)[:-1] + ", " + text)
        assert answer.status_code == 400 and answer.json()["field"] == "fitness", answer.text
    assert _run(leader, run_id)["evaluations_done"] == 0, "bad submissions change nothing"

    accepted = follower.post("/cmaes/evaluate", json=submit).json()
    assert accepted["accepted"] is True and accepted["fitness"] == 0.75, "the fitness is the breakdown's score"
    assert follower.post("/cmaes/evaluate", json=submit).json()["duplicate"] is True
    done = follower.post("/cmaes/evaluate", json={**submit, "candidate_id": second["candidate_id"], "wins": 0,
                                                  "draws": 2, "losses": 2, "fitness": 0.25})
    assert done.json()["generation_complete"] is True and done.json()["generation"] == 1
    run = _run(leader, run_id)
    assert run["evaluations_done"] == 2 and run["best_fitness"] == 0.75 and run["best_params"] == first["params"]

    before = len(follower.get("/cmaes/status").json()["runs"])
    for bad, field in (({"params": {"nonsense": [0, 1]}}, "params"), ({"params": {"corner": [2, -2]}}, "params.corner"),
                       ({"baseline": "mcts_x"}, "baseline"), ({"board_type": "chess9"}, "board_type"),
                       ({"games_per_eval": 1}, "games_per_eval"), ({"sigma0": 5}, "sigma0")):
        answer = _ask(follower, "/cmaes/start", {**RUN, **bad})
        assert answer.status_code == 400 and field in answer.json()["error"], (bad, answer.text)
    assert len(follower.get("/cmaes/status").json()["runs"]) == before
    assert follower.get("/cmaes/status", params={"run_id": "nope"}).status_code == 404

    assert _ask(leader, "/cmaes/result", {"run_id": run_id}).status_code == 409, "still running"
    forced = _ask(leader, "/cmaes/result", {"run_id": run_id, "force": True})
    assert forced.status_code == 200 and forced.json()["model"]["params"] == first["params"]
    assert _run(leader, run_id)["state"] == "finalised"
    assert follower.post("/cmaes/evaluate", json=submit).status_code == 409, "a finalised run takes no more results"
