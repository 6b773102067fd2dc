"""A/B tests (seed section "A/B Testing"): fishtest's SPRT over games the cluster plays or clients report.

Creating, running and cancelling are leader-only; results and reads go to the singleton from any
node. `/abtest/run` answers at once; the games go on until the SPRT decides or max_games.
"""
from __future__ import annotations

from orchestrator.gateway.endpoint import Endpoint
from orchestrator.gateway.evaluation_models import ABTestCreate, ABTestId, ABTestResult
from orchestrator.gateway.routes_tournament import actor


async def abtest_create(node, args: ABTestCreate, request):
    reply = await node.call(actor().create_abtest.remote(args.model_dump(), node.election()["epoch"]))
    return {"status": "success", "test_id": reply["test_id"], "created": reply.pop("created"), "test": reply}


async def abtest_result(node, args: ABTestResult, request):
    wdl = None if args.pentanomial is not None else [args.wins or 0, args.draws or 0, args.losses or 0]
    reply = await node.call(actor().add_abtest_results.remote(args.test_id, wdl, args.pentanomial,
                                                              args.submission_id))
    return {"status": "success", "test": reply}


async def abtest_status(node, args: ABTestId, request):
    return {"status": "success", **await node.call(actor().abtest_status.remote(args.test_id))}


async def abtest_list(node, request):
    tests = await node.call(actor().list_abtests.remote())
    return {"status": "success", "count": len(tests), "tests": tests}


async def abtest_cancel(node, args: ABTestId, request):
    reply = await node.call(actor().cancel_abtest.remote(args.test_id, node.election()["epoch"]))
    return {"status": "success", "test": reply}


async def abtest_run(node, args: ABTestId, request):
    reply = await node.call(actor().run_abtest.remote(args.test_id, node.election()["epoch"]))
    return {"status": "success", "test": reply}


ENDPOINTS = [
    Endpoint(("POST",), "/abtest/create", abtest_create, "Create an A/B test (SPRT parameters; test_id idempotent)",
             args=ABTestCreate, leader_only=True),
    Endpoint(("POST",), "/abtest/result", abtest_result, "Add wins/draws/losses or a pentanomial to a test",
             args=ABTestResult),
    Endpoint(("GET",), "/abtest/status", abtest_status, "SPRT state: LLR, bounds, decision, Elo, 95% CI, LOS",
             args=ABTestId),
    Endpoint(("GET",), "/abtest/list", abtest_list, "All A/B tests with their SPRT state"),
    Endpoint(("POST",), "/abtest/cancel", abtest_cancel, "Cancel a test; its games in flight stop",
             args=ABTestId, leader_only=True),
    Endpoint(("POST",), "/abtest/run", abtest_run, "Play colour-swapped pairs on the cluster until the SPRT decides",
             args=ABTestId, leader_only=True),
]
