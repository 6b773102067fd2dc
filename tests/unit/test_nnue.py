import numpy as np
import pytest
import torch

from orchestrator.learn.nnue import (
    NNUEConfig,
    NNUEEvaluator,
    NNUENet,
    NNUESamples,
    NNUETrainConfig,
    load_nnue,
    positions_from_records,
    save_nnue,
    train_nnue,
)
from orchestrator.nn.checkpoint import CheckpointError
from orchestrator.play.games import BUILTIN
from orchestrator.play.minimax import StateEvaluator, make_minimax_agent

torch.set_num_threads(1)


def random_records(board_type, games, seed=0):
    """Finished random games in the self-play record schema (policies are the uniform distribution)."""
    game = BUILTIN.load(board_type)
    rng = np.random.default_rng(seed)
    records = []
    for index in range(games):
        state = game.new_initial_state()
        moves, policies = [], []
        while not state.is_terminal():
            legal = state.legal_actions()
            moves.append(int(legal[rng.integers(len(legal))]))
            policies.append({str(a): 1.0 / len(legal) for a in legal})
            state.apply_action(moves[-1])
        records.append({"game_id": f"g-{index:07d}", "board_type": board_type, "moves": moves,
                        "policies": policies, "outcome": state.returns(), "termination": "terminal"})
    return records


def test_shapes_and_clipped_activations():
    config = NNUEConfig.for_game("connect_four", hidden=(64, 16))
    assert config.input_size == int(np.prod(BUILTIN.load("connect_four").observation_tensor_shape()))
    net = NNUENet(config)
    values = net(torch.randn(5, config.input_size) * 10)
    assert values.shape == (5,) and values.abs().max() < 1
    assert NNUEConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        NNUEConfig(input_size=4, hidden=())


def test_evaluate_many_batches_and_values_from_the_asked_players_side():
    torch.manual_seed(0)
    net = NNUENet(NNUEConfig.for_game("tic_tac_toe", hidden=(32, 8)))
    calls = []
    net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    evaluator = NNUEEvaluator(net)
    assert isinstance(evaluator, StateEvaluator)
    game = BUILTIN.load("tic_tac_toe")
    root = game.new_initial_state()
    children = [root.child(a) for a in root.legal_actions()]
    won = game.new_initial_state()
    for move in (0, 3, 1, 4, 2):  # x takes the top row
        won.apply_action(move)
    states = [*children, root, won]
    mine = evaluator.evaluate_many(states, 0)
    theirs = evaluator.evaluate_many(states, 1)
    assert calls == [10, 10]  # one forward pass per call, terminal states left out
    assert mine.shape == (11,) and np.all(np.abs(mine) <= 1)
    assert np.allclose(mine[:10], -theirs[:10])  # zero-sum: one side's value is the other's loss
    assert (mine[-1], theirs[-1]) == (1.0, -1.0)
    with torch.no_grad():
        direct = net(torch.tensor([children[0].observation_tensor(1)])).item()
    assert mine[0] == pytest.approx(-direct, abs=1e-6)  # after player 0's move, player 1 is to move


def test_positions_carry_the_movers_outcome():
    records = random_records("tic_tac_toe", 6)
    samples = positions_from_records("tic_tac_toe", records)
    assert len(samples) == sum(len(r["moves"]) for r in records) and samples.games == 6
    assert samples.observations.shape == (len(samples), 27) and samples.observations.dtype == np.float32
    record = records[0]
    state = BUILTIN.load("tic_tac_toe").new_initial_state()
    for i, move in enumerate(record["moves"]):
        mover = state.current_player()
        assert samples.observations[i].tolist() == state.observation_tensor(mover)
        assert samples.targets[i] == np.sign(record["outcome"][mover] - record["outcome"][1 - mover])
        state.apply_action(move)


def test_training_lowers_the_loss_and_honours_stop():
    samples = positions_from_records("tic_tac_toe", random_records("tic_tac_toe", 60))
    reports = []
    model, metrics = train_nnue(samples, NNUETrainConfig(hidden=(64, 16), batch_size=64, lr=3e-3, steps=200,
                                                         report_every=20),
                                lambda progress: reports.append(progress) or False)
    assert metrics["steps"] == 200 and metrics["final_loss"] < 0.8 * metrics["initial_loss"]
    assert {"step", "loss", "samples_per_s", "eta_s"} <= set(reports[-1])
    assert not model.training
    _, stopped = train_nnue(samples, NNUETrainConfig(hidden=(8,), steps=100, report_every=5), lambda p: True)
    assert stopped["stopped"] and stopped["steps"] == 5
    with pytest.raises(ValueError, match="samples"):
        train_nnue(NNUESamples(np.zeros((0, 27), np.float32), np.zeros(0, np.float32), (), {}), NNUETrainConfig())


def test_samples_streamed_to_a_cache_train_within_the_memory_cap(tmp_path):
    records = random_records("tic_tac_toe", 40)
    whole = positions_from_records("tic_tac_toe", records)
    cached = positions_from_records("tic_tac_toe", iter(records), cache_dir=tmp_path / "cache",
                                    capacity=sum(len(r["moves"]) for r in records))
    assert isinstance(cached.observations, np.memmap) and isinstance(cached.targets, np.memmap)
    assert np.array_equal(cached.observations, whole.observations) and np.array_equal(cached.targets, whole.targets)
    assert cached.game_ids == whole.game_ids and len(cached) > 64
    _, metrics = train_nnue(cached, NNUETrainConfig(hidden=(8,), batch_size=16, steps=40, report_every=10,
                                                    max_samples_in_memory=64))
    assert metrics["peak_samples_in_memory"] <= 64 < metrics["dataset_samples"] and np.isfinite(metrics["final_loss"])


def test_save_and_verified_load(tmp_path):
    net = NNUENet(NNUEConfig(input_size=27, hidden=(16, 8)))
    path = tmp_path / "models" / "n1.pt"
    digest = save_nnue(path, net, code_version="abc", parent="n0", data_window={"game_count": 3})
    loaded, metadata = load_nnue(path, digest)
    assert metadata["parent"] == "n0" and metadata["data_window"] == {"game_count": 3}
    x = torch.rand(4, 27)
    with torch.no_grad():
        assert torch.equal(loaded(x), net.eval()(x))
    assert load_nnue(path)[0].config == net.config  # the sidecar digest
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(CheckpointError, match="sha256"):
        load_nnue(path, digest)


def test_drives_minimax():
    net = NNUENet(NNUEConfig.for_game("connect_four", hidden=(32, 8)))
    agent = make_minimax_agent(NNUEEvaluator(net), depth=2)
    states = [BUILTIN.load("connect_four").new_initial_state() for _ in range(2)]
    decisions = agent.select_many(states)
    assert all(d.action in states[0].legal_actions() for d in decisions)
