"""Rollback management (seed section "Rollback Management"): the best model per board_type and its history.

Every promotion and rollback is an event of the board's ledger with its evidence (the SPRT numbers).
`/rollback/auto` starts the non-regression SPRT of the current best against the best it replaced
and rolls back by itself if it fails. Leader-only (the ledger is written under the leader's epoch).
"""
from __future__ import annotations

from pydantic import Field

from actors.pipeline import pipeline_actor
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.gateway.routes_improvement import BoardQuery
from orchestrator.learn.gating import GatingConfig
from orchestrator.models import RequestModel


class StatusQuery(RequestModel):
    board_type: str | None = Field(None, max_length=200, description="default: every board_type")


class RollbackExecute(BoardQuery):
    model_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$", description="an earlier best of this board_type")
    reason: str = Field(min_length=1, max_length=1000)


class RollbackAuto(BoardQuery):
    gating: GatingConfig = Field(default_factory=GatingConfig, description="regression_* bounds, search, games")


async def rollback_status(node, args: StatusQuery, request):
    pipeline = pipeline_actor()
    ledgers = await node.call(pipeline.ledgers.remote(args.board_type))
    checks = await node.call(pipeline.rollback_checks.remote(args.board_type))
    return {"status": "success", "current_best": {ledger["board_type"]: ledger["best"] for ledger in ledgers},
            "history": {ledger["board_type"]: ledger["events"] for ledger in ledgers}, "checks": checks}


async def rollback_candidates(node, args: BoardQuery, request):
    return {"status": "success", **await node.call(pipeline_actor().rollback_candidates.remote(args.board_type))}


async def rollback_execute(node, args: RollbackExecute, request):
    reply = await node.call(pipeline_actor().rollback_execute.remote(args.board_type, args.model_id, args.reason,
                                                                     node.election()["epoch"]))
    return {"status": "success", "board_type": args.board_type, "best": reply["ledger"]["best"], **reply}


async def rollback_auto(node, args: RollbackAuto, request):
    reply = await node.call(pipeline_actor().rollback_auto.remote(args.board_type, args.gating.model_dump(),
                                                                  node.election()["epoch"]))
    return {"status": "success", **reply}


ENDPOINTS = [
    Endpoint(("GET",), "/rollback/status", rollback_status,
             "Current best per board_type and every promotion/rollback with its SPRT evidence (?board_type=)",
             args=StatusQuery, leader_only=True),
    Endpoint(("GET",), "/rollback/candidates", rollback_candidates,
             "Earlier bests of a board_type with their ratings (?board_type=)", args=BoardQuery, leader_only=True),
    Endpoint(("POST",), "/rollback/execute", rollback_execute,
             "Make an earlier best the best again, logged with the reason (a retry is a no-op)",
             args=RollbackExecute, leader_only=True),
    Endpoint(("POST",), "/rollback/auto", rollback_auto,
             "Run the non-regression SPRT of the best against the one it replaced now; roll back if it fails",
             args=RollbackAuto, leader_only=True),
]
