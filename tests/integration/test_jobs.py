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
    for path in ("/stop_job", "/job/kill"):
        refused = node.post(path, json={"job_id": "bench-1"})
        assert refused.status_code == 409 and refused.json()["state"] == "stopped", refused.text
        assert "already stopped" in refused.json()["error"]
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


def test_a_planned_restart_stops_jobs_between_units_and_resumes_them(gateways):
    node = gateways.start("jobs-u", gateways.ray_node_id(0))
    node.post("/start_job", json={"job_id": "bench-u", "job_type": "benchmark",
                                  "config": {"duration_s": 3, "matrix_size": 64, "report_every_s": 0.2}})
    _running(node, "bench-u")
    answer = ray.get(node.actors.jobs.suspend.remote(30.0), timeout=60)
    assert answer == {"suspended": ["bench-u"], "not_at_boundary": []}
    job = node.job("bench-u")  # its task saw the stop at a report and ended itself: nothing was killed
    assert job["state"] == "stopped" and job["suspended"] is True and job["result"]["stopped_early"] is True
    ray.kill(node.actors.jobs, no_restart=False)  # the restart: the next incarnation resumes the job
    job = wait_until(lambda: (j := node.job("bench-u"))["state"] == "completed" and j, timeout_s=90, what="resumed")
    assert job["attempt"] == 2 and job["suspended"] is False and job["result"]["flops_per_s"] > 0


def test_jobs_on_another_node_are_visible_and_stoppable(gateways):
    a = gateways.start("jobs-x", gateways.ray_node_id(0), voters=["jobs-x"])
    b = gateways.start("jobs-y", gateways.ray_node_id(1), voters=["jobs-x"])
    b.post("/start_job", json={"job_id": "bench-y", "job_type": "benchmark", "config": LONG})
    _running(b, "bench-y")
    wait_until(lambda: any(j["job_id"] == "bench-y" for j in a.status()["jobs"]), what="remote job in status")
    stopped = a.post("/stop_job", json={"job_id": "bench-y"})
    assert stopped.status_code == 200
    wait_until(lambda: b.job("bench-y")["state"] == "stopped", what="remote stop")
    # Heartbeats carry only active jobs of other nodes: a finished one is found by asking the peers.
    wait_until(lambda: not any(j["job_id"] == "bench-y" for j in a.status()["jobs"]), what="remote job out of status")
    assert a.job("bench-y")["state"] == "stopped"
    assert a.post("/job/kill", json={"job_id": "bench-y"}).json()["state"] == "stopped"
    listed = a.get("/jobs", params={"node_id": "jobs-y"}).json()
    assert listed["node_id"] == "jobs-y" and [j["job_id"] for j in listed["jobs"]] == ["bench-y"]
    assert a.get("/jobs", params={"node_id": "nobody"}).status_code == 404


def test_history_is_windowed_paged_and_compacted(gateways):
    history_s = 12.0
    node = gateways.start("jobs-h", gateways.ray_node_id(1), recent_jobs_in_status=1, job_history_max_age_s=history_s,
                          games={"tiny_hex": "hex(board_size=3)"})
    # The live job plays a board type this deployment added: its catalogue reaches validation and the task.
    endless = {"board_type": "tiny_hex", "agent": "random", "num_games": 1_000_000, "games_per_file": 4,
               "flush_interval_s": 0.5}
    assert node.post("/start_job", json={"job_id": "live", "job_type": "selfplay", "config": endless}).status_code == 200
    unknown = node.post("/start_job", json={"job_type": "selfplay", "config": {**endless, "board_type": "huge_hex"}})
    assert unknown.status_code == 400 and unknown.json()["field"] == "config.board_type" and "tiny_hex" in unknown.text
    killed = []
    for i in range(3):  # killed while still pending: finished at once, no task needs to run
        job_id = f"old-{i}"
        node.post("/start_job", json={"job_id": job_id, "job_type": "benchmark", "config": LONG})
        assert node.post("/job/kill", json={"job_id": job_id}).status_code == 200
        killed.append(job_id)

    in_status = [j["job_id"] for j in node.status()["jobs"]]
    assert sorted(in_status) == ["live", "old-2"], "active jobs plus the one most recent finished job"
    heartbeat = ray.get(node.actors.jobs.summaries.remote())  # what the peer actor heartbeats
    assert sorted(j["job_id"] for j in heartbeat) == ["live", "old-2"]
    assert node.job("old-0")["state"] == "killed", "a finished job outside the window is still queryable"

    first = node.get("/jobs", params={"limit": 2}).json()
    assert [j["job_id"] for j in first["jobs"]] == ["old-2", "old-1"] and first["next_after"]
    rest = node.get("/jobs", params={"limit": 2, "after": first["next_after"]}).json()
    assert [j["job_id"] for j in rest["jobs"]] == ["old-0", "live"] and rest["next_after"] is None
    assert [j["job_id"] for j in node.get("/jobs", params={"state": "killed"}).json()["jobs"]] == killed[::-1]
    for params, field in (({"after": "garbage"}, "after"), ({"limit": 0}, "limit"), ({"state": "asleep"}, "state"),
                          ({"limt": 2}, "limt")):
        bad = node.get("/jobs", params=params)
        assert bad.status_code == 400 and field in bad.json()["error"], bad.text

    gone = lambda: node.get("/job/status", params={"job_id": "old-0"}).status_code == 404  # noqa: E731
    wait_until(gone, timeout_s=history_s + 15, what="finished jobs compacted after the history age")
    assert node.get("/jobs", params={"state": "killed"}).json()["jobs"] == []
    wait_until(lambda: node.job("live")["progress"].get("games_done", 0) > 0, timeout_s=60, what="tiny_hex games")
    assert node.job("live")["state"] == "running", "an active job is never compacted"
    node.post("/job/kill", json={"job_id": "live"})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
