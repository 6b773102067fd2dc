"""A training job whose task dies mid-run, with its node's supervisor, is relaunched as attempt 2,
which goes on from the last saved training state instead of step 0. Real node, real Ray actors,
real training task: frozen (SIGSTOP) at a known point so that no machine is too fast for the test,
then its supervisor is killed and Ray restarts it."""
import os
import signal

import ray

from orchestrator.learn.jobs import RESUME_DIR, RESUME_SUFFIX
from tests.harness import wait_until

BOARD = "tic_tac_toe"
STEPS = 2000
REPORT_EVERY = 25


def _done(node, job_id, timeout_s):
    return wait_until(lambda: (j := node.job(job_id))["state"] in ("completed", "failed", "stopped") and j,
                      timeout_s=timeout_s, what=f"{job_id} finished")


def test_a_training_job_killed_mid_run_resumes_from_its_saved_state_as_attempt_2(gateways):
    node = gateways.start("rs-a", gateways.ray_node_id(0))
    games = node.post("/start_job", json={"job_id": "rs-games", "job_type": "selfplay",
                                          "config": {"board_type": BOARD, "agent": "random", "num_games": 12}})
    assert games.status_code == 200, games.text
    assert _done(node, "rs-games", 120)["state"] == "completed"

    config = {"board_type": BOARD, "steps": STEPS, "batch_size": 16, "report_every": REPORT_EVERY, "blocks": 1,
              "channels": 8, "checkpoint_interval_s": 0}
    started = node.post("/start_job", json={"job_id": "rs-train", "job_type": "training", "config": config})
    assert started.status_code == 200, started.text
    # Two reports in, the state of the first is surely written (it is saved before the next step).
    job = wait_until(lambda: (j := node.job("rs-train"))["progress"].get("step", 0) >= 2 * REPORT_EVERY and j,
                     timeout_s=120, interval_s=0.02, what="training under way")
    pid = job["worker_pid"]
    os.kill(pid, signal.SIGSTOP)  # the task goes no further, however fast this machine is
    try:
        frozen_at = node.job("rs-train")["progress"]["step"]
        assert node.job("rs-train")["state"] == "running" and frozen_at < STEPS
        ray.kill(node.actors.jobs, no_restart=False)  # its node's supervisor dies; Ray restarts it from SQLite
        job = _done(node, "rs-train", 600)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)  # the frozen task, if Ray has not ended it with its owner
        except ProcessLookupError:
            pass
    assert job["state"] == "completed" and job["attempt"] == 2, job
    result = job["result"]
    assert REPORT_EVERY <= result["resumed_from_step"] <= frozen_at and result["resumed_from_step"] % REPORT_EVERY == 0
    assert result["resume_note"] is None and result["model"]["metrics"]["steps"] == STEPS
    assert result["checkpoint_verified"] is True
    assert not (node.settings.node_dir() / RESUME_DIR / f"rs-train{RESUME_SUFFIX}").exists()
