"""Promotion and rollback: who is `best` for a board_type, and the evidence for every change.

The ledger of a board_type is one document: the current best model, and every event that changed
or confirmed it (initial baseline, promotion, non-regression check, rollback), each with its
evidence (the SPRT numbers of the A/B test that decided it). Events carry ids, so applying the
same event twice (a retry after a crash, a new leader repeating its predecessor's last step) is
a no-op. The ledger is the truth; model records' `status` fields mirror it (`desired_statuses`).

Decisions, from an A/B test's status (its SPRT state: decision, llr, bounds, games, state):
    promotion       H1 accepted: promote; H0 accepted, or `max_games` reached or the test
                    cancelled without a decision: discard (no evidence that it is stronger).
    non-regression  H0 accepted (the new best is weaker than the previous one by the test's
                    bounds): roll back; H1, or no decision within `max_games`: keep.

Nothing here does I/O; what survives a failure is whatever document the caller stored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from pydantic import Field, field_validator, model_validator

from orchestrator.models import RequestModel
from orchestrator.play.agents import parse_agent
from orchestrator.stats.sprt import SprtParams

LEDGER_KIND = "best_models"
EVIDENCE_FIELDS = ("games", "wins", "draws", "losses", "pentanomial", "llr", "lower_bound", "upper_bound",
                   "decision", "elo", "elo_ci95", "los", "clamped")
SPRT_FIELDS = ("elo0", "elo1", "alpha", "beta", "elo_model")
MAX_GATING_GAMES = 1_000_000
_DEFAULTS = SprtParams(elo0=0.0, elo1=30.0)


class GatingConfig(RequestModel):
    """How a candidate is tested: the promotion SPRT (`elo0`..`elo_model`, the SprtParams fields)
    against the current best, then the non-regression SPRT (`regression_*`) of a promoted model
    against the best it replaced. Both sides play under the same `search`."""

    elo0: float = Field(_DEFAULTS.elo0, ge=-2000, le=2000, allow_inf_nan=False)
    elo1: float = Field(_DEFAULTS.elo1, ge=-2000, le=2000, allow_inf_nan=False)
    alpha: float = Field(_DEFAULTS.alpha, gt=0, lt=0.5)
    beta: float = Field(_DEFAULTS.beta, gt=0, lt=0.5)
    elo_model: Literal["logistic", "normalized"] = _DEFAULTS.elo_model
    max_games: int = Field(400, ge=2, le=MAX_GATING_GAMES, description="promotion test: games before giving up")
    regression_elo0: float = Field(-30.0, ge=-2000, le=2000, allow_inf_nan=False)
    regression_elo1: float = Field(0.0, ge=-2000, le=2000, allow_inf_nan=False)
    regression_max_games: int = Field(400, ge=2, le=MAX_GATING_GAMES)
    search: str = Field("mcts_32", description="the search both networks drive in gating games, e.g. gumbel_64")
    opening_plies: int | None = Field(None, ge=0, le=64,
                                      description="random plies before each colour-swapped pair, so deterministic "
                                                  "searches do not replay one game; default: the board's (see "
                                                  "/tournament/start)")

    @field_validator("search")
    @classmethod
    def _search_only(cls, value: str) -> str:
        spec = parse_agent(value)
        if spec.model_id is not None or spec.kind in ("random", "heuristic"):
            raise ValueError("must be a search a network can drive (mcts_<n>, gumbel_<n>, descent, ...), "
                             "without a model")
        return spec.name

    @model_validator(mode="after")
    def _valid_sprt(self) -> "GatingConfig":
        if self.regression_elo0 >= self.regression_elo1:
            raise ValueError("regression_elo0 must be below regression_elo1")
        self.promotion_sprt()
        self.regression_sprt()
        return self

    def promotion_sprt(self) -> SprtParams:
        return SprtParams(self.elo0, self.elo1, self.alpha, self.beta, self.elo_model)

    def regression_sprt(self) -> SprtParams:
        return SprtParams(self.regression_elo0, self.regression_elo1, self.alpha, self.beta, self.elo_model)

    def abtest_spec(self, test_id: str, board_type: str, agent_a: str, agent_b: str, regression: bool) -> dict:
        """The A/B test to create (test id, agents, SPRT parameters); agent_a is the newer model."""
        params = self.regression_sprt() if regression else self.promotion_sprt()
        return {"test_id": test_id, "agent_a": agent_a, "agent_b": agent_b, "board_type": board_type,
                "elo0": params.elo0, "elo1": params.elo1, "alpha": params.alpha, "beta": params.beta,
                "elo_model": params.elo_model, "opening_plies": self.opening_plies,
                "max_games": self.regression_max_games if regression else self.max_games}


def model_agent(model_id: str, search: str) -> str:
    return f"model:{model_id}+{search}"


# -- verdicts -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    action: str  # "wait", "promote", "discard" (promotion); "wait", "keep", "rollback" (non-regression)
    reason: str


def evidence(test_id: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """The SPRT numbers that justify a decision, with the hypotheses they were tested under."""
    return {"test_id": test_id, "agent_a": spec.get("agent_a"), "agent_b": spec.get("agent_b"),
            **{key: spec.get(key) for key in (*SPRT_FIELDS, "max_games")},
            **{key: status.get(key) for key in EVIDENCE_FIELDS}, "state": status.get("state")}


def _finished(status: Mapping[str, Any]) -> bool:
    return status.get("state") in ("finished", "cancelled")


def promotion_verdict(status: Mapping[str, Any]) -> Verdict:
    decision = status.get("decision")
    if decision == "H1":
        return Verdict("promote", f"SPRT accepted H1 (llr {status.get('llr'):.3f} >= {status.get('upper_bound'):.3f})")
    if decision == "H0":
        return Verdict("discard", f"SPRT accepted H0 (llr {status.get('llr'):.3f} <= {status.get('lower_bound'):.3f})")
    if _finished(status):
        return Verdict("discard", f"no SPRT decision after {status.get('games')} games ({status.get('state')}): "
                                  "no evidence that the candidate is stronger")
    return Verdict("wait", "SPRT undecided")


def regression_verdict(status: Mapping[str, Any]) -> Verdict:
    decision = status.get("decision")
    if decision == "H0":
        return Verdict("rollback", f"non-regression SPRT accepted H0 (llr {status.get('llr'):.3f}): "
                                   "the new best is weaker than the one it replaced")
    if decision == "H1":
        return Verdict("keep", f"non-regression SPRT accepted H1 (llr {status.get('llr'):.3f})")
    if _finished(status):
        return Verdict("keep", f"no non-regression decision after {status.get('games')} games "
                               f"({status.get('state')}): no evidence of a regression")
    return Verdict("wait", "non-regression SPRT undecided")


# -- the ledger ---------------------------------------------------------------------------------

def empty_ledger(board_type: str) -> dict[str, Any]:
    return {"board_type": board_type, "best": None, "events": []}


def has_event(ledger: Mapping[str, Any], event_id: str) -> bool:
    return any(event["event_id"] == event_id for event in ledger["events"])


def _with_event(ledger: Mapping[str, Any], event: dict[str, Any], best: str | None) -> dict[str, Any]:
    return {**ledger, "best": best, "events": [*ledger["events"], event]}


def initial_best(ledger: Mapping[str, Any], event_id: str, model_id: str, now: float, reason: str) -> dict[str, Any]:
    """The first best of a board_type (nothing to test it against). Refused once a best exists."""
    if has_event(ledger, event_id):
        return dict(ledger)
    if ledger["best"] is not None:
        raise ValueError(f"{ledger['board_type']} already has a best model ({ledger['best']})")
    event = {"event_id": event_id, "kind": "initial", "model_id": model_id, "previous": None, "at": now,
             "reason": reason, "evidence": None}
    return _with_event(ledger, event, model_id)


def promote(ledger: Mapping[str, Any], event_id: str, model_id: str, now: float, reason: str,
            proof: Mapping[str, Any]) -> dict[str, Any]:
    """`model_id` becomes best. Only a promotion verdict (SPRT H1) may lead here: `proof` must say H1."""
    if has_event(ledger, event_id):
        return dict(ledger)
    if proof.get("decision") != "H1":
        raise ValueError(f"promotion of {model_id} needs an SPRT that accepted H1, got {proof.get('decision')!r}")
    if proof.get("agent_b") is not None and ledger["best"] is not None and \
            not str(proof["agent_b"]).startswith(f"model:{ledger['best']}+"):
        raise ValueError(f"the SPRT of {model_id} was against {proof['agent_b']}, not the current best {ledger['best']}")
    event = {"event_id": event_id, "kind": "promotion", "model_id": model_id, "previous": ledger["best"],
             "at": now, "reason": reason, "evidence": dict(proof)}
    return _with_event(ledger, event, model_id)


def record_check(ledger: Mapping[str, Any], event_id: str, model_id: str, now: float, reason: str,
                 proof: Mapping[str, Any]) -> dict[str, Any]:
    """A non-regression check that kept the best: logged with its evidence, best unchanged."""
    if has_event(ledger, event_id):
        return dict(ledger)
    event = {"event_id": event_id, "kind": "non_regression_passed", "model_id": model_id,
             "previous": ledger["best"], "at": now, "reason": reason, "evidence": dict(proof)}
    return _with_event(ledger, event, ledger["best"])


def rollback(ledger: Mapping[str, Any], event_id: str, to_model: str, now: float, reason: str,
             proof: Mapping[str, Any] | None, manual: bool = False) -> dict[str, Any]:
    """The best goes back to `to_model`, which must have been best of this board_type before."""
    if has_event(ledger, event_id):
        return dict(ledger)
    if to_model == ledger["best"]:
        raise ValueError(f"{to_model} is already the best model of {ledger['board_type']}")
    if to_model not in former_bests(ledger):
        raise ValueError(f"{to_model} was never the best model of {ledger['board_type']}")
    event = {"event_id": event_id, "kind": "manual_rollback" if manual else "rollback", "model_id": to_model,
             "previous": ledger["best"], "at": now, "reason": reason, "evidence": dict(proof) if proof else None}
    return _with_event(ledger, event, to_model)


def former_bests(ledger: Mapping[str, Any]) -> list[str]:
    """Every model that was best at some time, newest first, without the current one."""
    seen: list[str] = []
    for event in reversed(ledger["events"]):
        model = event["model_id"] if event["kind"] != "non_regression_passed" else None
        if model and model != ledger["best"] and model not in seen:
            seen.append(model)
    return seen


def rolled_back(ledger: Mapping[str, Any]) -> set[str]:
    """Models demoted by a rollback and not made best again since."""
    demoted: set[str] = set()
    for event in ledger["events"]:
        if event["kind"] in ("rollback", "manual_rollback") and event["previous"]:
            demoted.add(event["previous"])
        demoted.discard(event["model_id"] if event["kind"] != "non_regression_passed" else None)
    return demoted


def previous_best(ledger: Mapping[str, Any]) -> str | None:
    """The best that the current one replaced (what a non-regression check compares with)."""
    for event in reversed(ledger["events"]):
        if event["model_id"] == ledger["best"] and event["kind"] != "non_regression_passed":
            return event["previous"]
    return None


def desired_statuses(ledger: Mapping[str, Any]) -> dict[str, str]:
    """What each model's registry `status` should say, by the ledger."""
    demoted = rolled_back(ledger)
    statuses = {model: ("rolled_back" if model in demoted else "archived") for model in former_bests(ledger)}
    if ledger["best"] is not None:
        statuses[ledger["best"]] = "best"
    return statuses


def status_path(current: str, wanted: str, transitions: Mapping[str, frozenset[str]]) -> list[str]:
    """The legal status moves from `current` to `wanted` (shortest), [] if already there or none."""
    frontier, came_from = [current], {current: None}
    while frontier:
        status = frontier.pop(0)
        if status == wanted:
            path = []
            while came_from[status] is not None:
                path.append(status)
                status = came_from[status]
            return path[::-1]
        for following in sorted(transitions.get(status, ())):
            if following not in came_from:
                came_from[following] = status
                frontier.append(following)
    return []
