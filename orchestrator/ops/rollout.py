"""When a node that was just updated counts as back: the rule the cluster git update waits on.

A node is back when its `/health` says `ok` or `degraded` (not `unavailable`), its checkout is on the commit its update reported,
and, if it said it was restarting, the process answering is a new one. The last check matters
because the old process keeps serving for a moment after answering the update (HEAD has already
moved, so `/git/status` alone would pass before the new code ever ran). A process that started
after the update's answer arrived has an uptime shorter than the time since then; the old one's
uptime is longer, since it was serving before the answer left.

Pure: the gateway polls and passes in what it read; the rule is tested without a network.
"""
from __future__ import annotations

from typing import Any


def not_back_because(health: dict[str, Any] | None, git_status: dict[str, Any] | None, expected_commit: str,
                     restarting: bool, since_answer_s: float) -> str | None:
    """None when the node is back on `expected_commit`; else why not yet, for the report.

    `health` / `git_status` are the node's answers (None: it did not answer); `since_answer_s` is
    how long ago the update's answer arrived, on the caller's monotonic clock.
    """
    if not isinstance(health, dict):
        return "/health does not answer"
    uptime = health.get("uptime_seconds")
    if restarting and not (isinstance(uptime, (int, float)) and uptime < since_answer_s):
        return f"still the process from before the update (uptime {uptime}s)"
    # degraded counts as back: the process serves on its new code, and what degrades it (no leader
    # known for a moment, a slow refresh) is often the churn the rollout itself causes
    if health.get("status") not in ("ok", "degraded"):
        reasons = "; ".join(str(r) for r in health.get("reasons") or [])
        return f"/health is {health.get('status')!r}" + (f": {reasons}" if reasons else "")
    if not isinstance(git_status, dict):
        return "/git/status does not answer"
    commit = git_status.get("commit")
    if commit != expected_commit:
        return f"running commit {str(commit)[:12]}, not {expected_commit[:12]}"
    return None
