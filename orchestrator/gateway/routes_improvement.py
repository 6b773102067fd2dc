"""The improvement loop (seed section "Improvement Pipeline"): selfplay -> train -> gate -> promote or discard.

Every endpoint is leader-only (followers forward): the runs live in the cluster store and are driven
by the PipelineActor under the current leader's epoch, so a run survives a leader change and the
new leader carries on with the cycle where it was. `/improvement/start` answers at once with the
run id; `/improvement/status` reports cycles done/total, the phase, rate and ETA.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from actors.pipeline import pipeline_actor
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.gateway.routes_training import training_node
from orchestrator.learn.pipeline import RUN_ID, ImprovementRequest
from orchestrator.models import RequestModel
from orchestrator.play.games import DEFAULT_BOARD_TYPE, catalog_in


class RunQuery(RequestModel):
    run_id: str | None = Field(None, pattern=RUN_ID, description="default: the newest running run, else the newest")


class CyclesQuery(RunQuery):
    board_type: str | None = Field(None, max_length=200)


class BoardQuery(RequestModel):
    board_type: str = Field(DEFAULT_BOARD_TYPE, max_length=200)

    @field_validator("board_type")
    @classmethod
    def _known_game(cls, value: str, info: ValidationInfo) -> str:
        catalog_in(info.context).spec(value)
        return value


class PhaseComplete(RequestModel):
    cycle_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")
    phase: str = Field(max_length=32, description="selfplay or training (gating is decided by its SPRT)")
    result: dict[str, Any] = Field(default_factory=dict, description='selfplay: {"games": n}; '
                                                                     'training: {"model_id": id, "loss"?: x}')


async def start_run(node, mode: str, args: ImprovementRequest) -> dict[str, Any]:
    target = training_node(node, args.node_id, "the run")  # where its self-play, training and checkpoints live
    reply = await node.call(pipeline_actor().start.remote(mode, args.stored(), target, node.election()["epoch"]))
    return {"status": "success", "run_id": reply["run"]["run_id"], "created": reply["created"], "run": reply["run"]}


async def improvement_start(node, args: ImprovementRequest, request):
    return await start_run(node, "improvement", args)


async def improvement_status(node, args: RunQuery, request):
    return {"status": "success", **await node.call(pipeline_actor().status.remote(args.run_id, "improvement"))}


async def improvement_cancel(node, args: RunQuery, request):
    run = await node.call(pipeline_actor().cancel.remote(args.run_id, "improvement", node.election()["epoch"]))
    return {"status": "success", "run": run}


async def phase_complete(node, args: PhaseComplete, request):
    reply = await node.call(pipeline_actor().phase_complete.remote(args.cycle_id, args.phase, args.result,
                                                                   node.election()["epoch"]))
    return {"status": "success", **reply}


async def cycles_status(node, args: CyclesQuery, request):
    cycles = await node.call(pipeline_actor().cycles.remote(args.run_id, args.board_type))
    return {"status": "success", "count": len(cycles), "cycles": cycles}


async def cycles_leaderboard(node, args: BoardQuery, request):
    return {"status": "success", **await node.call(pipeline_actor().leaderboard.remote(args.board_type))}


ENDPOINTS = [
    Endpoint(("POST",), "/improvement/start", improvement_start,
             "Start an improvement run: cycles of selfplay -> training -> SPRT gating -> promote or discard "
             "(run_id idempotent)", args=ImprovementRequest, leader_only=True),
    Endpoint(("GET",), "/improvement/status", improvement_status,
             "A run's cycles done/total, current phase, promotions, rate and ETA (?run_id=)", args=RunQuery,
             leader_only=True),
    Endpoint(("POST",), "/improvement/cancel", improvement_cancel, "Cancel an improvement run; its jobs stop",
             args=RunQuery, leader_only=True),
    Endpoint(("POST",), "/improvement/phase_complete", phase_complete,
             "A phase worker reports a selfplay or training phase done", args=PhaseComplete, leader_only=True),
    Endpoint(("GET",), "/improvement_cycles/status", cycles_status,
             "Per cycle: games, loss, gating LLR and decision, Elo delta, duration (?run_id=&board_type=)",
             args=CyclesQuery, leader_only=True),
    Endpoint(("GET",), "/improvement_cycles/leaderboard", cycles_leaderboard,
             "Networks by Bradley-Terry rating with 95% intervals, and the cycle each came from (?board_type=)",
             args=BoardQuery, leader_only=True),
]
