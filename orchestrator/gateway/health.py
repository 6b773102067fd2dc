"""A node's own health, `ok | degraded | unavailable`, judged from what its cached view knows.

Pure: it takes the view's age, how many refreshes in a row failed (and why the last did) and how
long no leader has been known, so `/health` answers without an actor round trip per request and
the rule is tested without Ray.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEGRADED_AFTER_REFRESHES = 10  # the view missed this many refresh periods: some actor is slow
UNAVAILABLE_AFTER_FAILURES = 3  # refreshes failed in a row: the node's actors are gone
UNAVAILABLE_AFTER_REFRESHES = 20  # periods past the actor-call timeout without a refresh: they hang
LEADERLESS_UNAVAILABLE_TTLS = 2.0  # an election takes at most about one lease TTL

NODE_HEALTH_RULE = (
    f"unavailable: the last {UNAVAILABLE_AFTER_FAILURES} refreshes of the cached view failed, or the view is "
    f"older than actor_call_timeout_s + {UNAVAILABLE_AFTER_REFRESHES} refresh periods (view_refresh_s), or no "
    f"leader has been known for more than {LEADERLESS_UNAVAILABLE_TTLS:g} lease TTLs (lease_ttl_s); "
    f"degraded: the last refresh failed (an actor call failed or timed out), or the view is older than "
    f"{DEGRADED_AFTER_REFRESHES} refresh periods, or no leader is known; ok: otherwise")

Status = Literal["ok", "degraded", "unavailable"]


@dataclass(frozen=True)
class Health:
    status: Status
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class HealthTimings:
    view_refresh_s: float
    actor_call_timeout_s: float
    lease_ttl_s: float


def judge(view_age_s: float, failed_refreshes: int, last_error: str | None, leaderless_s: float | None,
          timings: HealthTimings) -> Health:
    """`failed_refreshes` counts failures since the last success; `leaderless_s` is None while a
    leader is known, else for how long none has been."""
    unavailable: list[str] = []
    degraded: list[str] = []
    if failed_refreshes >= UNAVAILABLE_AFTER_FAILURES:
        unavailable.append(f"the last {failed_refreshes} view refreshes failed: {last_error}")
    elif failed_refreshes:
        degraded.append(f"last view refresh failed: {last_error}")
    hung_after_s = timings.actor_call_timeout_s + UNAVAILABLE_AFTER_REFRESHES * timings.view_refresh_s
    if view_age_s > hung_after_s:
        unavailable.append(f"view {view_age_s:.1f}s old: no refresh within {hung_after_s:g}s")
    elif view_age_s > DEGRADED_AFTER_REFRESHES * timings.view_refresh_s:
        degraded.append(f"view {view_age_s:.1f}s old: refreshes are late")
    if leaderless_s is not None:
        leaderless = f"no leader known for {leaderless_s:.1f}s"
        (unavailable if leaderless_s > LEADERLESS_UNAVAILABLE_TTLS * timings.lease_ttl_s else degraded).append(leaderless)
    if unavailable:
        return Health("unavailable", tuple(unavailable + degraded))
    return Health("degraded" if degraded else "ok", tuple(degraded))
