"""Jobs on a real Ray cluster through real HTTP: start, idempotency, stop, kill, stuck, restart."""
import os

import ray

from tests.harness import wait_until

LONG = {"duration_s": 60, "matrix_size": 64, "report_every_s": 0.2}


def _running(node, job_id):
    return wait_until(lambda: (j := node.job(job_id))["state"] == "running" and j["progress"].get("done") is not None and j,
                      timeout_s=60, what=f"{job_id} running with progress")


def test_start_is_idempotent_and_stop_is_graceful(gateways):
    node = gateways.start("jobs-a", gateways.ray_node_id(0))
    body = {"job_id": "bench-1", "job_type": "benchmark", "config": LONG}
    first = node.post("/start_job", json=body)
    assert first.status_code == 200 and first.json()["created"] is True
    again = node.post("/start_job", json=body)
    assert again.status_code == 200 and again.json()["created"] is False and again.json()["job_id"] == "bench-1"
    other = node.post("/start_job", json={**body, "config": {**LONG, "duration_s": 5}})
    assert other.status_code == 409 and other.json()["code"] == 409
    job = _running(node, "bench-1")
    assert job["progress"]["flops_per_s"] > 0 and job["attempt"] == 1
    assert any(j["job_id"] == "bench-1" for j in node.status()["jobs"])
    assert node.post("/stop_job", json={"job_id": "bench-1"}).json()["job"]["state"] == "stopping"
    job = wait_until(lambda: (j := node.job("bench-1"))["state"] == "stopped" and j, what="stopped")
    assert job["result"]["stopped_early"] is True and job["finished_at"] >= job["started_at"]
    assert node.post("/stop_job", json={"job_id": "bench-1"}).status_code == 409
    assert node.post("/job/kill", json={"job_id": "bench-1"}).status_code == 409
    assert node.post("/stop_job", json={"job_id": "nope"}).status_code == 404
    assert node.post("/job/kill", json={"job_id": "nope"}).status_code == 404


def test_completed_job_reports_flops(gateways):
    node = gateways.start("jobs-c", gateways.ray_node_id(0))
    job_id = node.post("/start_job", json={"job_type": "benchmark", "config": {"duration_s": 1}}).json()["job_id"]
    job = wait_until(lambda: (j := node.job(job_id))["state"] == "completed" and j, timeout_s=60, what="completed")
    assert job["result"]["flops_per_s"] > 0 and job["result"]["stopped_early"] is False


def test_kill_sigkills_the_task(gateways):
    node = gateways.start("jobs-k", gateways.ray_node_id(1))
    node.post("/start_job", json={"job_id": "bench-k", "job_type": "benchmark", "config": LONG})
    _running(node, "bench-k")
    pid = node.job("bench-k")["worker_pid"]
    killed = node.post("/job/kill", json={"job_id": "bench-k"})
    assert killed.status_code == 200 and killed.json()["job"]["state"] == "killed"
    wait_until(lambda: not _alive(pid), what=f"worker {pid} gone")
    assert node.job("bench-k")["state"] == "killed"


def test_stuck_job_is_flagged_and_restarted(gateways):
    node = gateways.start("jobs-s", gateways.ray_node_id(0), stuck_after_s=1.5)
    config = {"duration_s": 120, "matrix_size": 64, "report_every_s": 60}
    node.post("/start_job", json={"job_id": "bench-s", "job_type": "benchmark", "config": config})
    wait_until(lambda: node.job("bench-s")["stuck"], timeout_s=60, what="stuck flag")
    wait_until(lambda: node.status()["cluster_health"] == "degraded", what="degraded health while stuck")
    restarted = node.post("/restart_stuck_jobs").json()
    assert restarted["restarted_count"] == 1 and restarted["jobs"][0]["job_id"] == "bench-s"
    assert restarted["jobs"][0]["attempt"] == 2
    job = node.job("bench-s")
    assert job["attempt"] == 2 and job["state"] in ("pending", "running")
    node.post("/job/kill", json={"job_id": "bench-s"})


def test_supervisor_killed_mid_job_forgets_nothing(gateways):
    node = gateways.start("jobs-r", gateways.ray_node_id(0))
    node.post("/start_job", json={"job_id": "bench-r", "job_type": "benchmark",
                                  "config": {"duration_s": 4, "matrix_size": 64, "report_every_s": 0.2}})
    _running(node, "bench-r")
    ray.kill(node.actors.jobs, no_restart=False)  # Ray restarts it; it reloads from SQLite
    job = wait_until(lambda: (j := node.job("bench-r"))["state"] == "completed" and j, timeout_s=90, what="completed")
    assert job["attempt"] == 2 and job["result"]["flops_per_s"] > 0


def test_jobs_on_another_node_are_visible_and_stoppable(gateways):
    a = gateways.start("jobs-x", gateways.ray_node_id(0), voters=["jobs-x"])
    b = gateways.start("jobs-y", gateways.ray_node_id(1), voters=["jobs-x"])
    b.post("/start_job", json={"job_id": "bench-y", "job_type": "benchmark", "config": LONG})
    _running(b, "bench-y")
    wait_until(lambda: any(j["job_id"] == "bench-y" for j in a.status()["jobs"]), what="remote job in status")
    stopped = a.post("/stop_job", json={"job_id": "bench-y"})
    assert stopped.status_code == 200
    wait_until(lambda: b.job("bench-y")["state"] == "stopped", what="remote stop")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
