"""The continuous pipeline (seed section "Pipeline Control"): self-play keeps producing with the best
network, training starts every `games_per_cycle` new games, gating and rollback as in the improvement loop.

Leader-only; state in the cluster store, driven by the PipelineActor (see routes_improvement).
"""
from __future__ import annotations

import asyncio
import logging

import aiohttp

from actors.pipeline import pipeline_actor
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.gateway.routes_improvement import RunQuery, start_run
from orchestrator.learn.pipeline import PipelineRequest

log = logging.getLogger(__name__)
AUTOSTART_RETRY_S = 2.0
# What `orchestrator start` runs by default: budgets a laptop CPU turns into a visible climb (a small
# net, cheap self-play search; see tests/unit/test_learning_progress.py for why games beat search here).
AUTOSTART = {"games_per_cycle": 512, "selfplay": {"bootstrap_agent": "mcts_8", "search": "mcts_8",
                                                  "parallel_games": 128},
             "training": {"blocks": 2, "channels": 32, "batch_size": 64, "epochs": 2.0, "window_games": 2048},
             # gating's opening_plies: the board's default (4 on square8, see orchestrator.play.evaluation)
             "gating": {"search": "mcts_32", "elo0": 0, "elo1": 50, "max_games": 400}}


async def pipeline_start(node, args: PipelineRequest, request):
    return await start_run(node, "pipeline", args)


async def pipeline_status(node, args: RunQuery, request):
    return {"status": "success", **await node.call(pipeline_actor().status.remote(args.run_id, "pipeline"))}


async def pipeline_stop(node, args: RunQuery, request):
    run = await node.call(pipeline_actor().cancel.remote(args.run_id, "pipeline", node.election()["epoch"]))
    return {"status": "success", "run": run}


ENDPOINTS = [
    Endpoint(("POST",), "/pipeline/start", pipeline_start,
             "Start the continuous pipeline (cycles: null runs until stopped; games_per_cycle alias "
             "train_every_games; run_id idempotent)", args=PipelineRequest, leader_only=True),
    Endpoint(("GET",), "/pipeline/status", pipeline_status, "The pipeline's cycles, phase, promotions, rate (?run_id=)",
             args=RunQuery, leader_only=True),
    Endpoint(("POST",), "/pipeline/stop", pipeline_stop, "Stop a pipeline; its self-play and training jobs stop",
             args=RunQuery, leader_only=True),
]


async def autostart(settings) -> None:
    """Ask this node's own gateway for the continuous pipeline on `settings.autostart_pipeline`, as a
    client would, until some leader accepts it. The run id is fixed, so every node may ask and a
    restarted node finds the run it started before (a stopped one stays stopped)."""
    board_type = settings.autostart_pipeline
    host = settings.bind_host()
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{settings.port}/pipeline/start"
    body = {"run_id": f"autostart-{board_type}".replace(":", "_")[:64], "board_type": board_type, **AUTOSTART}
    headers = {"Authorization": f"Bearer {settings.token()}"} if settings.token() else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.actor_call_timeout_s)) as http:
        while True:
            try:
                async with http.post(url, json=body, headers=headers) as answer:
                    reply = await answer.json()
                    if answer.status == 200:
                        log.info("continuous pipeline %s on %s (%s)", reply["run_id"], board_type,
                                 "started" if reply["created"] else "already there")
                        return
                    if answer.status == 409 and "different body" in str(reply.get("error")):
                        # started by an earlier version, whose defaults differ: it goes on as it was
                        log.warning("continuous pipeline %s exists with another body and goes on as it is; "
                                    "for this version's defaults, stop it (POST /pipeline/stop) and start one under "
                                    "another run_id", body["run_id"])
                        return
                    if answer.status != 503:
                        log.error("continuous pipeline not started: %s", reply.get("error"))
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("continuous pipeline: gateway not answering yet (%s)", type(exc).__name__)
            await asyncio.sleep(AUTOSTART_RETRY_S)
