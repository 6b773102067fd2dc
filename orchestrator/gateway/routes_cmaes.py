"""CMA-ES (seed sections "CMA-ES" and "Selfplay & Training"): runs live in the CMAESActor singleton.

Starting a run and finalising it are leader-only (they schedule cluster work and register a
model); submitting an evaluation and reading status go to the singleton from any node.
"""
from __future__ import annotations

import uuid

from orchestrator.gateway.endpoint import Endpoint
from orchestrator.models import CMAESEvaluateRequest, CMAESResultRequest, CMAESRunQuery, CMAESStartRequest

CONFIG_FIELDS = ("board_type", "agent", "params", "baseline", "popsize", "sigma0", "generations", "seed", "initial",
                 "opening_plies")


async def cmaes_start(node, args: CMAESStartRequest, request):
    run_id = args.run_id or f"cmaes-{uuid.uuid4().hex[:12]}"
    config = {**args.model_dump(include=set(CONFIG_FIELDS)), "run_id": run_id,
              "games_per_candidate": args.games_per_eval}
    reply = await node.call(node.actors.cmaes.start.remote(config, args.external_workers, args.eval_timeout_s))
    created = reply.pop("created")
    return {"status": "success", "run_id": run_id, "created": created, "run": reply}


async def cmaes_evaluate(node, args: CMAESEvaluateRequest, request):
    reply = await node.call(node.actors.cmaes.submit.remote(args.run_id, args.generation, args.candidate_id, args.games,
                                                            args.wins, args.draws, args.losses, args.fitness))
    return {"status": "success", "run_id": args.run_id, "candidate_id": args.candidate_id, **reply}


async def cmaes_status(node, args: CMAESRunQuery, request):
    reply = await node.call(node.actors.cmaes.status.remote(args.run_id))
    return {"status": "success", "run": reply} if args.run_id else {"status": "success", **reply}


async def cmaes_result(node, args: CMAESResultRequest, request):
    reply = await node.call(node.actors.cmaes.finalise.remote(args.run_id, args.force))
    return {"status": "success", "run_id": args.run_id, "model_id": reply["model"]["model_id"],
            "agent": f"heuristic@{reply['model']['model_id']}" if reply["run"]["agent"] == "heuristic" else None,
            **reply}


ENDPOINTS = [
    Endpoint(("POST",), "/cmaes/start", cmaes_start, "Start a CMA-ES run tuning an agent's bounded parameters",
             args=CMAESStartRequest, leader_only=True),
    Endpoint(("POST",), "/training/cmaes/start", cmaes_start, "Start a CMA-ES run (same as /cmaes/start)",
             args=CMAESStartRequest, leader_only=True),
    Endpoint(("POST",), "/cmaes/evaluate", cmaes_evaluate,
             "An external worker's wins/draws/losses for a candidate (external_workers runs only)",
             args=CMAESEvaluateRequest),
    Endpoint(("GET",), "/cmaes/status", cmaes_status, "CMA-ES runs: generation, best so far, sigma, pending/done, ETA",
             args=CMAESRunQuery),
    Endpoint(("POST",), "/cmaes/result", cmaes_result, "Finalise a run: its best params become an agent_params model",
             args=CMAESResultRequest, leader_only=True),
]
