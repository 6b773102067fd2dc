"""Which evaluation batches ask for a GPU, and how many games they hold."""
import pytest

from orchestrator.play.agents import InvalidAgent
from orchestrator.play.eval_placement import (CPU_BATCH_GAMES, GPU_BATCH_GAMES, GPU_SHARE_PER_BATCH, BatchPlan,
                                              batch_plan, uses_network)

CPU_ONLY = BatchPlan(CPU_BATCH_GAMES, 0.0)


def test_a_network_batch_on_a_gpu_node_is_larger_and_holds_a_gpu_share():
    plan = batch_plan(["model:abc+gumbel_64", "random"], node_gpus=1)
    assert plan == BatchPlan(GPU_BATCH_GAMES, GPU_SHARE_PER_BATCH)
    assert plan.games > CPU_BATCH_GAMES and plan.games % 2 == 0, "whole colour-swapped pairs"
    assert 0 < plan.num_gpus < 1, "several network batches share one device"
    assert batch_plan(["model:a", "model:b+mcts_800"], node_gpus=8).num_gpus == GPU_SHARE_PER_BATCH
    assert batch_plan(["model:nnue1+minimax_3", "heuristic"], node_gpus=1).num_gpus > 0, "an NNUE is a network too"


def test_a_node_declaring_under_one_gpu_is_asked_for_no_more_than_it_has():
    assert batch_plan(["model:abc", "random"], node_gpus=0.1) == BatchPlan(GPU_BATCH_GAMES, 0.1)


@pytest.mark.parametrize("agents", [["random", "mcts_800"], ["openspiel_mcts_100", "heuristic@params1"],
                                    ["gumbel_64", "minimax_3"], ["descent", "heuristic"]])
def test_batches_without_a_network_never_ask_for_a_gpu(agents):
    assert not uses_network(agents)
    assert batch_plan(agents, node_gpus=4) == CPU_ONLY


def test_a_cpu_only_node_plays_network_batches_as_before():
    assert batch_plan(["model:abc+gumbel_64", "random"], node_gpus=0) == CPU_ONLY


def test_agent_names_are_parsed_not_matched_by_prefix():
    assert uses_network(["  model:x+mcts_8 "]) and not uses_network(["heuristic@model"])
    with pytest.raises(InvalidAgent):
        uses_network(["model:"])
