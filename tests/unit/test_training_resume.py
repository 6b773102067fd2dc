"""Training goes on from its saved state after a restart: a crashed attempt's successor resumes at
the last saved step and ends with the very weights an uninterrupted run reaches; a stopped
(suspended) run resumes from its stop; a state that cannot be trusted or used is set aside and the
run starts over. Real tic-tac-toe self-play, real training, real files."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from orchestrator.learn.jobs import RESUME_DIR, RESUME_SUFFIX
from orchestrator.learn.nnue import load_nnue
from orchestrator.learn.samples import BlockLoader
from orchestrator.nn.checkpoint import load_checkpoint
from tests.unit.test_learn_jobs import SMALL, Context, _run, data_dir, games_dir  # noqa: F401 (fixtures)

EVERY_REPORT = {**SMALL, "window_games": 1000, "checkpoint_interval_s": 0}  # a state at each report: 4, 8, 12


class Crash(Exception):
    """The attempt's task dying mid-run."""


@dataclass
class CrashingContext(Context):
    crash_at: int | None = None  # the report of this step never returns
    stop_at: int | None = None  # the report of this step asks the job to stop

    def report(self, progress):
        super().report(progress)
        if progress.get("phase") == "training" and progress["step"] == self.crash_at:
            raise Crash(f"killed at step {self.crash_at}")
        return progress.get("phase") == "training" and progress["step"] == self.stop_at


def _state_file(ctx: Context):
    return ctx.data_dir / RESUME_DIR / f"{ctx.job_id}{RESUME_SUFFIX}"


def _steps(ctx: Context) -> list[int]:
    return [r["step"] for r in ctx.reports if r.get("phase") in ("training", "resuming")]


def _weights(path):
    return load_checkpoint(path).model.state_dict()


def test_a_crashed_run_resumes_at_its_last_saved_step_and_ends_where_an_uninterrupted_one_does(data_dir):
    straight = _run("training", EVERY_REPORT, Context(data_dir, job_id="straight"))
    assert straight["resumed_from_step"] == 0 and straight["model"]["metrics"]["steps"] == 12

    first = CrashingContext(data_dir, job_id="crashy", crash_at=8)
    with pytest.raises(Crash):
        _run("training", EVERY_REPORT, first)
    assert _state_file(first).is_file()  # saved at step 4; step 8's report never returned
    second = CrashingContext(data_dir, job_id="crashy", attempt=2)
    resumed = _run("training", EVERY_REPORT, second)
    assert _steps(second) == [4, 8, 12]  # "resuming" at 4, then training reports 8 and 12 only
    assert resumed["resumed_from_step"] == 4 and resumed["resume_note"] is None
    assert resumed["model"]["metrics"]["steps"] == 12 and resumed["checkpoint_verified"] is True
    assert resumed["model"]["data_window"] == {**straight["model"]["data_window"]}
    mine, theirs = _weights(data_dir / resumed["model"]["path"]), _weights(data_dir / straight["model"]["path"])
    assert all(torch.equal(mine[name], theirs[name]) for name in theirs), "the same batches, the same optimizer"
    assert not _state_file(second).exists()  # the model is saved: nothing left to resume


def test_a_stopped_nnue_run_keeps_its_state_and_the_resumed_job_finishes(data_dir):
    config = {**EVERY_REPORT, "hidden": [16, 8]}
    config.pop("blocks"), config.pop("channels")
    suspended = CrashingContext(data_dir, job_id="nnue-s", stop_at=8)
    stopped = _run("nnue_training", config, suspended)
    assert stopped["stopped"] is True and stopped["registered"] is False and "step 8" in stopped["registration"]
    assert _state_file(suspended).is_file() and not (data_dir / "models" / "nnue-s.nnue").exists()
    again = Context(data_dir, job_id="nnue-s", attempt=2)
    result = _run("nnue_training", config, again)
    assert result["resumed_from_step"] == 8 and [r["step"] for r in again.reports if r.get("phase") == "training"] \
        == [12]
    load_nnue(data_dir / result["model"]["path"], result["model"]["sha256"])
    assert not _state_file(again).exists()


def test_a_torn_state_or_one_of_another_window_is_set_aside_and_the_run_starts_over(data_dir):
    with pytest.raises(Crash):
        _run("training", EVERY_REPORT, CrashingContext(data_dir, job_id="torn", crash_at=12))
    state = _state_file(Context(data_dir, job_id="torn"))
    state.write_bytes(state.read_bytes()[:-10])  # no longer what its digest says
    result = _run("training", EVERY_REPORT, Context(data_dir, job_id="torn", attempt=2))
    assert result["resumed_from_step"] == 0 and "unusable" in result["resume_note"]

    with pytest.raises(Crash):
        _run("training", EVERY_REPORT, CrashingContext(data_dir, job_id="moved", crash_at=12))
    next(iter(sorted((data_dir / "selfplay").rglob("*.jsonl")))).unlink()  # a window file cleaned up meanwhile
    result = _run("training", EVERY_REPORT, Context(data_dir, job_id="moved", attempt=2))
    assert result["resumed_from_step"] == 0 and "no longer all here" in result["resume_note"]
    assert result["model"]["data_window"]["game_count"] == 16


@pytest.mark.parametrize("cap", [1000, 24])  # all on the device, and streamed a block at a time
def test_a_loader_skipping_k_batches_serves_exactly_what_follows_them(cap):
    rows = np.arange(100 * 3, dtype=np.float32).reshape(100, 3)

    def loader():
        return BlockLoader([rows], batch_size=8, max_samples_in_memory=cap, device="cpu", seed=7)
    whole = [b[0] for b in itertools.islice(loader().batches(), 40)]
    skipping = loader()
    rest = [b[0] for b in itertools.islice(skipping.batches(skip=23), 17)]
    assert all(torch.equal(a, b) for a, b in zip(whole[23:], rest)) and len(rest) == 17
