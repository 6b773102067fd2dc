"""The improvement cycle / continuous pipeline state machine, driven against a fake world.

The fake stands behind the same seam the PipelineActor fills (a `World` in, actions out): jobs
finish when the test says so, A/B tests decide what the test says, ledger events are applied
with the real gating functions.
"""
from __future__ import annotations

import pytest

from orchestrator.errors import BadRequest, Conflict, NotFound
from orchestrator.learn import gating
from orchestrator.learn import pipeline as pl

BOARD = "tic_tac_toe"
DECIDED = {"H1": {"state": "finished", "decision": "H1", "llr": 3.0, "lower_bound": -2.94, "upper_bound": 2.94,
                  "games": 40, "elo": 120.0},
           "H0": {"state": "finished", "decision": "H0", "llr": -3.0, "lower_bound": -2.94, "upper_bound": 2.94,
                  "games": 40, "elo": -150.0}}


class FakeWorld:
    def __init__(self, epoch=1, leader="lead"):
        self.ledger = gating.empty_ledger(BOARD)
        self.epoch, self.leader = epoch, leader
        self.jobs: dict = {}
        self.tests: dict = {}
        self.started: list = []
        self.models: dict = {}
        self.data_dir = "/data/home"

    def world(self, run):
        return pl.World(self.ledger, self.epoch, self.leader,
                        jobs={j: self.jobs.get(j) for j in pl.job_ids(run)},
                        tests={t: self.tests.get(t) for t in pl.test_ids(run)},
                        models={m: self.models.get(m) for m in pl.model_ids(run)})

    def apply(self, actions, now):
        for action in actions:
            self.started.append(action)
            if isinstance(action, pl.StartJob) and action.job_id not in self.jobs:
                self.jobs[action.job_id] = {"state": "running", "progress": {"games_done": 0}, "result": None,
                                            "config": action.config, "epoch": action.epoch}
            elif isinstance(action, pl.StartTest) and action.test_id not in self.tests:
                self.tests[action.test_id] = {"state": "running", "decision": None, "llr": 0.0, "games": 0,
                                              "spec": action.spec}
            elif isinstance(action, pl.InitBaseline):
                self.ledger = gating.initial_best(self.ledger, action.event_id, action.model_id, now, "init")
            elif isinstance(action, pl.LedgerEvent):
                apply = {"promote": gating.promote, "check": gating.record_check}.get(action.kind)
                if apply:
                    self.ledger = apply(self.ledger, action.event_id, action.model_id, now, action.reason,
                                        action.evidence)
                else:
                    self.ledger = gating.rollback(self.ledger, action.event_id, action.model_id, now, action.reason,
                                                  action.evidence)
            elif isinstance(action, pl.RegisterModel):
                self.models.setdefault(action.model_id, action.doc)
            elif isinstance(action, pl.StopJob) and action.job_id in self.jobs:
                self.jobs[action.job_id]["state"] = "stopped"

    def finish_selfplay(self, job_id, games=32):
        self.jobs[job_id].update(state="completed", progress={"games_done": games},
                                 result={"directory": f"{self.data_dir}/selfplay/{BOARD}/{job_id}"})

    def finish_training(self, job_id, registered=True, verified=True):
        model_id = self.jobs[job_id]["config"]["model_id"]
        self.jobs[job_id].update(state="completed", result={
            "registered": registered, "model_id": model_id, "registration": "ok" if registered else "refused",
            "checkpoint_verified": verified, "model": {"sha256": "ab" * 32, "metrics": {"final_loss": 1.25}}})
        if registered:
            self.models[model_id] = self.jobs[job_id]["result"]["model"]
        return model_id

    def decide(self, test_id, decision):
        self.tests[test_id].update(DECIDED[decision])


def _request(**overrides):
    request = pl.ImprovementRequest(board_type=BOARD, games_per_cycle=32, gating={"elo0": 0, "elo1": 200},
                                    **overrides).stored()
    return request


def _step(run, fake, now):
    run, actions = pl.advance(run, fake.world(run), now)
    fake.apply(actions, now)
    return run, actions


def _current(run):
    return run["cycles"][-1]


def test_one_cycle_from_scratch_promotes_a_candidate_that_passes_both_sprts():
    fake = FakeWorld()
    run = pl.new_run("r1", "improvement", _request(cycles=1), "home", now=0.0)
    run, actions = _step(run, fake, 1.0)
    (start,) = actions
    assert start.job_type == "selfplay" and start.job_id == "r1-c1-selfplay-1"
    assert start.config["agent"] == "mcts_8" and start.config["num_games"] == 32, "bootstrap agent without a best"
    run, actions = _step(run, fake, 2.0)
    assert actions == [], "a running job is not started twice"
    fake.finish_selfplay("r1-c1-selfplay-1")
    run, actions = _step(run, fake, 3.0)
    assert run["data_dir"] == "/data/home" and _current(run)["games"] == 32
    training = [a for a in actions if isinstance(a, pl.StartJob)]
    assert training and training[0].config["model_id"] == "r1-c1-1" and training[0].config["epoch"] == 1
    assert "parent" not in training[0].config, "cycle 1 trains from the same seeded init as the untrained baseline"
    run, actions = _step(run, fake, 4.0)
    assert any(isinstance(a, pl.InitBaseline) for a in fake.started) and fake.ledger["best"] == "r1-untrained"
    candidate = fake.finish_training("r1-c1-train-1")
    run, actions = _step(run, fake, 5.0)
    (test,) = actions
    assert test.spec["agent_a"] == f"model:{candidate}+mcts_32" and test.spec["agent_b"] == "model:r1-untrained+mcts_32"
    assert (test.spec["elo0"], test.spec["elo1"]) == (0, 200)
    fake.decide(test.test_id, "H1")
    run, actions = _step(run, fake, 6.0)
    assert fake.ledger["best"] == candidate and fake.ledger["events"][-1]["evidence"]["llr"] == 3.0
    run, actions = _step(run, fake, 7.0)
    (regression,) = [a for a in actions if isinstance(a, pl.StartTest)]
    assert regression.spec["agent_b"] == "model:r1-untrained+mcts_32" and regression.spec["elo1"] == 0.0
    fake.decide(regression.test_id, "H1")
    run, _ = _step(run, fake, 8.0)
    run, _ = _step(run, fake, 9.0)
    cycle = _current(run)
    assert cycle["outcome"] == "promoted" and cycle["elo_delta"] == 120.0 and cycle["loss"] == 1.25
    assert run["state"] == "finished" and fake.ledger["events"][-1]["kind"] == "non_regression_passed"
    view = pl.cycle_view(cycle, 10.0)
    assert view["gating_llr"] == 3.0 and view["decision"] == "promote" and view["duration_s"] == 8.0


def _through_training(run, fake, now, registered=True):
    run, _ = _step(run, fake, now)
    fake.finish_selfplay(pl.selfplay_job_id(_current(run)))
    run, _ = _step(run, fake, now + 1)
    run, _ = _step(run, fake, now + 2)
    candidate = fake.finish_training(pl.training_job_id(_current(run)), registered)
    run, _ = _step(run, fake, now + 3)
    return run, candidate


def test_a_weak_candidate_is_discarded_and_the_next_cycle_uses_the_best_for_selfplay():
    fake = FakeWorld()
    run = pl.new_run("r2", "improvement", _request(cycles=2), "home", now=0.0)
    run, candidate = _through_training(run, fake, 1.0)
    fake.decide(pl.gating_test_id(_current(run)), "H0")
    run, actions = _step(run, fake, 5.0)
    assert pl.Archive(candidate) in actions and run["cycles"][0]["outcome"] == "discarded"
    assert fake.ledger["best"] == "r2-untrained"
    second = _current(run)
    assert second["index"] == 2 and second["selfplay_agent"] == "model:r2-untrained+mcts_8"


def test_a_promotion_that_fails_non_regression_rolls_back_by_itself():
    fake = FakeWorld()
    run = pl.new_run("r3", "improvement", _request(cycles=1), "home", now=0.0)
    run, candidate = _through_training(run, fake, 1.0)
    fake.decide(pl.gating_test_id(_current(run)), "H1")
    run, _ = _step(run, fake, 5.0)
    run, _ = _step(run, fake, 6.0)
    assert fake.ledger["best"] == candidate
    fake.decide(pl.regression_test_id(_current(run)), "H0")
    run, actions = _step(run, fake, 7.0)
    assert [a.kind for a in actions if isinstance(a, pl.LedgerEvent)] == ["rollback"]
    run, _ = _step(run, fake, 8.0)
    assert fake.ledger["best"] == "r3-untrained" and fake.ledger["events"][-1]["evidence"]["decision"] == "H0"
    assert _current(run)["outcome"] == "rolled_back" and run["state"] == "finished"


def test_repeating_a_step_after_a_crash_starts_nothing_twice():
    """A new leader re-runs `advance` on the stored run: same ids, same bodies, no duplicate work."""
    fake = FakeWorld()
    run = pl.new_run("r4", "improvement", _request(cycles=1), "home", now=0.0)
    stored, first = pl.advance(run, fake.world(run), 1.0)
    again, second = pl.advance(run, fake.world(run), 1.5)  # the old leader died before acting
    assert first == second and stored["cycles"][0]["cycle_id"] == again["cycles"][0]["cycle_id"]
    fake.apply(first + second, 2.0)
    assert len(fake.jobs) == 1


def test_training_commissioned_by_a_deposed_leader_is_commissioned_again_under_the_new_epoch():
    fake = FakeWorld()
    run = pl.new_run("r5", "improvement", _request(cycles=1), "home", now=0.0)
    run, _ = _step(run, fake, 1.0)
    fake.finish_selfplay(pl.selfplay_job_id(_current(run)))
    run, actions = pl.advance(run, fake.world(run), 2.0)  # stored, then the leader died: never started
    fake.epoch, fake.leader = 2, "next"
    run, actions = _step(run, fake, 3.0)
    (job,) = [a for a in actions if isinstance(a, pl.StartJob)]
    assert job.job_id == "r5-c1-train-2" and job.epoch == 2 and job.config["leader_id"] == "next"
    model_id = fake.finish_training(job.job_id, registered=False)  # its leader deposed meanwhile: refused
    run, actions = _step(run, fake, 4.0)
    assert actions == [pl.RegisterModel(model_id, fake.jobs[job.job_id]["result"]["model"])]
    run, actions = _step(run, fake, 5.0)
    assert _current(run)["phase"] == "gating" and _current(run)["candidate"] == model_id, "registered, not retrained"
    assert _current(run)["training_attempt"] == 2


def test_an_unverified_unregistered_model_is_trained_again():
    fake = FakeWorld()
    run = pl.new_run("r5b", "improvement", _request(cycles=1), "home", now=0.0)
    run, _ = _step(run, fake, 1.0)
    fake.finish_selfplay(pl.selfplay_job_id(_current(run)))
    run, _ = _step(run, fake, 2.0)
    fake.finish_training("r5b-c1-train-1", registered=False, verified=False)
    run, actions = _step(run, fake, 3.0)
    assert _current(run)["training_attempt"] == 2 and "not registered" in _current(run)["note"]
    assert [a.job_id for a in actions if isinstance(a, pl.StartJob)] == ["r5b-c1-train-2"]


def test_a_phase_that_keeps_failing_fails_the_run_with_the_reason():
    fake = FakeWorld()
    run = pl.new_run("r6", "improvement", _request(cycles=3), "home", now=0.0)
    for attempt in range(1, pl.MAX_ATTEMPTS + 1):
        run, _ = _step(run, fake, float(attempt))
        job_id = pl.selfplay_job_id(_current(run))
        fake.jobs[job_id].update(state="failed", error="boom")
    run, actions = _step(run, fake, 10.0)
    assert run["state"] == "failed" and "boom" in run["error"]


def test_pipeline_overlaps_selfplay_with_training_and_merges_a_backlog():
    fake = FakeWorld()
    run = pl.new_run("p1", "pipeline", pl.PipelineRequest(board_type=BOARD, train_every_games=16)
                     .stored(), "home", now=0.0)
    assert run["request"]["games_per_cycle"] == 16 and run["request"]["cycles"] is None
    run, _ = _step(run, fake, 1.0)
    fake.finish_selfplay("p1-c1-selfplay-1", games=16)
    run, actions = _step(run, fake, 2.0)
    phases = [c["phase"] for c in run["cycles"]]
    assert phases == ["training", "selfplay"], "the next batch of self-play starts at once"
    run, _ = _step(run, fake, 3.0)
    fake.finish_selfplay("p1-c2-selfplay-1", games=16)
    run, _ = _step(run, fake, 4.0)
    fake.finish_selfplay("p1-c3-selfplay-1", games=16)
    run, _ = _step(run, fake, 5.0)
    assert [c["phase"] for c in run["cycles"]] == ["training", "queued", "queued", "selfplay"]
    fake.finish_training("p1-c1-train-1")
    assert fake.ledger["best"] == "p1-untrained"
    run, _ = _step(run, fake, 6.0)
    fake.decide(pl.gating_test_id(run["cycles"][0]), "H0")
    run, _ = _step(run, fake, 7.0)
    assert [c["outcome"] for c in run["cycles"][:3]] == ["discarded", "merged", None]
    assert run["cycles"][2]["phase"] == "training" and run["state"] == "running"


def test_phase_reports_from_a_worker():
    fake = FakeWorld()
    run = pl.new_run("r7", "improvement", _request(cycles=1), "home", now=0.0)
    run, _ = _step(run, fake, 1.0)
    with pytest.raises(NotFound):
        pl.complete_phase(run, "nope", "selfplay", {"games": 1}, {}, 2.0)
    with pytest.raises(BadRequest, match="gating"):
        pl.complete_phase(run, "r7-c1", "gating", {"decision": "H1"}, {}, 2.0)
    with pytest.raises(BadRequest, match="result.games"):
        pl.complete_phase(run, "r7-c1", "selfplay", {"games": -1}, {}, 2.0)
    with pytest.raises(Conflict):
        pl.complete_phase(run, "r7-c1", "training", {"model_id": "m"}, {}, 2.0)
    run, actions = pl.complete_phase(run, "r7-c1", "selfplay", {"games": 50}, {}, 2.0)
    assert actions == [pl.StopJob("r7-c1-selfplay-1")] and _current(run)["games"] == 50
    again, none = pl.complete_phase(run, "r7-c1", "selfplay", {"games": 50}, {}, 3.0)
    assert none == [] and again == run, "a retried report changes nothing"


def test_cancel_stops_the_running_jobs_and_tests():
    fake = FakeWorld()
    run = pl.new_run("r8", "pipeline", _request(cycles=2), "home", now=0.0)
    run, _ = _step(run, fake, 1.0)
    run, actions = pl.cancel(run, 2.0)
    assert run["state"] == "cancelled" and actions == [pl.StopJob("r8-c1-selfplay-1")]
    assert pl.advance(run, fake.world(run), 3.0)[1] == []
    gating_run, _ = _through_training(pl.new_run("r9", "improvement", _request(cycles=1), "home", now=0.0), fake, 4.0)
    assert pl.cancel(gating_run, 9.0)[1] == [pl.StopTest("r9-c1-gate-1")]


def test_requests_validate_training_and_gating_sub_objects():
    with pytest.raises(ValueError, match="training.steps|steps"):
        pl.ImprovementRequest(training={"steps": 0})
    with pytest.raises(ValueError, match="set by the pipeline"):
        pl.ImprovementRequest(training={"parent": "x"})
    with pytest.raises(ValueError, match="bogus"):
        pl.ImprovementRequest(training={"bogus": 1})
    with pytest.raises(ValueError, match="gating"):
        pl.ImprovementRequest(gating={"alpha": 2})
    with pytest.raises(ValueError, match="board_type"):
        pl.ImprovementRequest(board_type="openspiel:kuhn_poker")


def test_trends_and_leaderboard_follow_the_cycles_and_the_ledger():
    from orchestrator.learn import trends

    fake = FakeWorld()
    run = pl.new_run("t1", "improvement", _request(cycles=2), "home", now=0.0)
    run, first = _through_training(run, fake, 1.0)
    fake.decide(pl.gating_test_id(_current(run)), "H1")
    for now in (5.0, 6.0):
        run, _ = _step(run, fake, now)
    fake.decide(pl.regression_test_id(_current(run)), "H1")
    for now in (7.0, 8.0):
        run, _ = _step(run, fake, now)
    run, second = _through_training(run, fake, 9.0)
    fake.decide(pl.gating_test_id(_current(run)), "H0")
    run, _ = _step(run, fake, 14.0)
    points = trends.history([run], fake.ledger, None)
    assert [(p["outcome"], p["elo_chain"], p["best_after"]) for p in points] == [
        ("promoted", 120.0, first), ("discarded", 120.0, None)]
    assert points[-1]["games_total"] == 64 and trends.history([run], fake.ledger, since=10.0) == points[1:]
    summary = trends.summary([run], fake.ledger, now=15.0)
    assert (summary["promotions"], summary["discards"], summary["rollbacks"], summary["current_best"]) == \
        (1, 1, 0, first)
    assert summary["latest_loss"] == 1.25 and summary["games_last_hour"] == 64
    table = {"board_type": BOARD, "anchor": "random", "rows": [
        {"agent": f"model:{first}+mcts_32", "elo": 300.0}, {"agent": "random", "elo": 0.0},
        {"agent": "model:t1-untrained+mcts_32", "elo": 10.0}, {"agent": f"model:{second}+mcts_32", "elo": -5.0}]}
    board = trends.leaderboard(table, fake.ledger, {c["candidate"]: c for c in run["cycles"]})
    assert [(r["model_id"], r["role"], r["outcome"]) for r in board["rows"]] == [
        (first, "best", "promoted"), ("t1-untrained", "former_best", None), (second, "candidate", "discarded")]


def test_a_run_refused_for_good_fails_with_the_reason_and_stops_its_work():
    fake = FakeWorld()
    run = pl.new_run("r10", "improvement", _request(cycles=1), "home", now=0.0)
    run, _ = _step(run, fake, 1.0)
    failed, stops = pl.cancel(run, 2.0, "failed", "StartTest refused: agent_a: cannot load")
    assert failed["state"] == "failed" and failed["error"].startswith("StartTest refused")
    assert stops == [pl.StopJob("r10-c1-selfplay-1")] and pl.advance(failed, fake.world(failed), 3.0)[1] == []


def test_an_ab_test_that_cannot_play_fails_the_cycle_and_the_run():
    fake = FakeWorld()
    run = pl.new_run("r11", "improvement", _request(cycles=2), "home", now=0.0)
    run, _ = _through_training(run, fake, 1.0)
    fake.tests[pl.gating_test_id(_current(run))].update(state="failed", errors=["p0-0: ModelUnavailable: no file"])
    run, actions = _step(run, fake, 5.0)
    assert run["state"] == "failed" and "ModelUnavailable" in run["error"] and len(run["cycles"]) == 1
    assert fake.ledger["best"] == "r11-untrained", "nothing promoted on a test that played no games"
