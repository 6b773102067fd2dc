"""The job state machine: transitions, idempotency digest, attempts, stuck detection."""
import pytest

from orchestrator.cluster.jobs import Job, JobState, body_digest
from orchestrator.errors import Conflict


def _job():
    return Job.new("j1", "benchmark", "n1", {"duration_s": 5}, now=100.0)


def test_digest_ignores_key_order_and_sees_values():
    assert body_digest("t", {"a": 1, "b": 2}) == body_digest("t", {"b": 2, "a": 1})
    assert body_digest("t", {"a": 1}) != body_digest("t", {"a": 2})
    assert body_digest("t", {}) != body_digest("u", {})


def test_first_report_starts_and_stop_flag_is_returned():
    job = _job()
    assert job.report(1, {"done": 1}, 101.0) is False
    assert job.state is JobState.RUNNING and job.started_at == 101.0
    job.request_stop(102.0)
    assert job.state is JobState.STOPPING and job.report(1, {"done": 2}, 103.0) is True
    assert job.finish(1, JobState.STOPPED, 104.0)
    with pytest.raises(Conflict):
        job.request_stop(105.0)


def test_reports_from_a_replaced_attempt_are_ignored():
    job = _job()
    job.report(1, {"done": 1}, 101.0)
    job.finish(1, JobState.KILLED, 102.0)
    job.restart(103.0)
    assert job.attempt == 2 and job.state is JobState.PENDING
    assert job.report(1, {"done": 99}, 104.0) is True and job.progress == {}
    assert job.finish(1, JobState.COMPLETED, 105.0) is False and job.state is JobState.PENDING
    assert job.report(2, {"done": 1}, 106.0) is False and job.state is JobState.RUNNING


def test_completed_is_final():
    job = _job()
    job.report(1, {}, 101.0)
    job.finish(1, JobState.COMPLETED, 102.0, result={"x": 1})
    with pytest.raises(Conflict):
        job.restart(103.0)


def test_stuck_only_while_running_and_silent():
    job = _job()
    assert not job.is_stuck(1000.0, 10)
    job.report(1, {}, 100.0)
    assert not job.is_stuck(105.0, 10) and job.is_stuck(111.0, 10)
    job.report(1, {}, 111.0)
    assert not job.is_stuck(115.0, 10)
    job.finish(1, JobState.FAILED, 116.0, error="boom")
    assert not job.is_stuck(1000.0, 10)


def test_record_round_trip():
    job = _job()
    job.report(1, {"done": 3}, 101.0, worker_pid=42)
    again = Job.from_record(job.to_record())
    assert again == job and again.state is JobState.RUNNING
