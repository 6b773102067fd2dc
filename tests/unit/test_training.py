import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.learn.samples import BlockLoader
from orchestrator.learn.training import (
    PolicyValueConfig,
    PolicyValueDataset,
    TrainConfig,
    TrainingDiverged,
    build_dataset,
    moves_in,
    outcome_vector,
    read_window,
    replay_games,
    scan_window,
    train_policy_value,
)
from orchestrator.nn.resnet import PolicyValueNet, ResNetConfig
from orchestrator.play.games import BUILTIN, GameCatalog
from orchestrator.play.records import game_files, read_games, write_records
from orchestrator.play.selfplay import SelfplayConfig, job_directory, run_selfplay

torch.set_num_threads(1)


@dataclass
class Context:
    data_dir: Path
    job_id: str = "sp"
    node_id: str = "n1"
    attempt: int = 1
    games: GameCatalog = BUILTIN
    device: str = "cpu"
    reports: list = field(default_factory=list)

    def report(self, progress):
        self.reports.append(progress)
        return False


@pytest.fixture(scope="module")
def selfplay(tmp_path_factory):
    """Real self-play records (tic-tac-toe, mcts_8): (data_dir, files, records)."""
    data_dir = tmp_path_factory.mktemp("data")
    ctx = Context(data_dir)
    run_selfplay(SelfplayConfig(board_type="tic_tac_toe", agent="mcts_8", num_games=24, parallel_games=8,
                                games_per_file=8), ctx)
    files = game_files(job_directory(data_dir, "tic_tac_toe", ctx.job_id))
    return data_dir, files, list(read_games(files))


def test_dataset_from_records_has_the_right_shapes_and_targets(selfplay):
    _, _, records = selfplay
    dataset = build_dataset("tic_tac_toe", records)
    positions = sum(len(r["moves"]) for r in records)
    assert len(dataset) == positions and dataset.skipped == {} and len(dataset.game_ids) == 24
    assert dataset.observations.shape == (positions, 3, 3, 3)
    assert dataset.policies.shape == (positions, 9) and dataset.values.shape == (positions, 1)
    assert np.allclose(dataset.policies.sum(axis=1), np.ones(positions))
    # Replay the first game by hand: the mover's view, the search's distribution, the mover's outcome.
    game = BUILTIN.load("tic_tac_toe")
    record = records[0]
    state = game.new_initial_state()
    for i, move in enumerate(record["moves"]):
        mover = state.current_player()
        assert dataset.observations[i].flatten().tolist() == state.observation_tensor(mover)
        expected = np.zeros(9, dtype=np.float32)
        for action, p in record["policies"][i].items():
            expected[int(action)] = p
        assert np.allclose(dataset.policies[i], expected / expected.sum())
        assert set(np.flatnonzero(dataset.policies[i])) <= set(state.legal_actions())
        assert dataset.values[i, 0] == outcome_vector(record["outcome"])[mover]
        state.apply_action(move)


def test_games_that_do_not_replay_are_skipped_whole(selfplay):
    _, _, records = selfplay
    good = records[:3]
    illegal = copy.deepcopy(records[3])
    illegal["moves"][-1] = illegal["moves"][0]  # an occupied square
    other = {**copy.deepcopy(records[4]), "board_type": "connect_four"}
    wrong_outcome = copy.deepcopy(records[5])
    wrong_outcome["outcome"] = [5.0, 5.0]
    bad_policy = copy.deepcopy(records[6])
    bad_policy["policies"][1] = {str(bad_policy["moves"][0]): 1.0}  # the square just taken
    skipped = {}
    result = list(replay_games("tic_tac_toe", [*good, illegal, other, wrong_outcome, bad_policy, good[0]], skipped))
    assert [g.game_id for g in result] == [r["game_id"] for r in good]
    assert skipped == {"illegal_move": 1, "other_board_type": 1, "outcome_mismatch": 1, "bad_policy": 1,
                       "duplicate": 1}
    assert sum(len(g.movers) for g in result) == sum(len(r["moves"]) for r in good) == sum(len(g.policies)
                                                                                            for g in result)


def test_outcome_vector_is_win_draw_loss_per_seat():
    assert outcome_vector([1.0, -1.0]) == [1.0, -1.0]
    assert outcome_vector([0.0, 0.0]) == [0.0, 0.0]
    assert outcome_vector([3.0, 1.0, 3.0]) == [0.0, -1.0, 0.0]


def _small_net():
    torch.manual_seed(0)
    return PolicyValueNet(ResNetConfig.for_game(BUILTIN.spec("tic_tac_toe"), blocks=1, channels=16))


def test_training_lowers_the_loss_on_a_fixed_dataset(selfplay):
    dataset = build_dataset("tic_tac_toe", selfplay[2])
    reports = []
    metrics = train_policy_value(_small_net(), dataset, PolicyValueConfig(batch_size=32, lr=3e-3, steps=150,
                                                                          report_every=25),
                                 lambda progress: reports.append(progress) or False)
    assert metrics["steps"] == 150 and not metrics["stopped"]
    assert metrics["final_loss"] < 0.8 * metrics["initial_loss"]
    assert metrics["final_value_loss"] < metrics["initial_value_loss"]
    assert [r["step"] for r in reports] == [25, 50, 75, 100, 125, 150]
    assert all({"loss", "policy_loss", "value_loss", "samples_per_s", "eta_s"} <= set(r) for r in reports)
    assert reports[-1]["eta_s"] == 0 and reports[0]["samples_per_s"] > 0


def test_should_stop_is_honoured_and_sgd_and_epochs_work(selfplay):
    dataset = build_dataset("tic_tac_toe", selfplay[2])
    metrics = train_policy_value(_small_net(), dataset, PolicyValueConfig(batch_size=16, steps=100, report_every=10),
                                 lambda progress: True)
    assert metrics["stopped"] and metrics["steps"] == 10
    config = PolicyValueConfig(batch_size=16, epochs=2, optimizer="sgd", lr=0.01, report_every=1000)
    metrics = train_policy_value(_small_net(), dataset, config)
    assert metrics["steps"] == 2 * (len(dataset) // 16) and np.isfinite(metrics["final_loss"])


def test_loop_trains_on_exactly_the_given_tensors():
    observations = np.random.default_rng(0).random((8, 3, 3, 3), dtype=np.float32)
    policies = np.zeros((8, 9), dtype=np.float32)
    policies[:, 4] = 1.0
    values = np.ones((8, 1), dtype=np.float32)
    dataset = PolicyValueDataset(observations, policies, values, (), {}, 0)
    metrics = train_policy_value(_small_net(), dataset, PolicyValueConfig(batch_size=64, lr=3e-2, steps=100,
                                                                          report_every=10))
    assert metrics["batch_size"] == 8  # a dataset smaller than a batch trains on all of it
    assert metrics["final_policy_loss"] < 0.2 < metrics["initial_policy_loss"]
    assert metrics["final_value_loss"] < 0.05


def test_divergence_is_an_error_not_a_model():
    observations = np.full((8, 3, 3, 3), np.nan, dtype=np.float32)
    dataset = PolicyValueDataset(observations, np.full((8, 9), 1 / 9, dtype=np.float32),
                                 np.zeros((8, 1), dtype=np.float32), (), {}, 0)
    with pytest.raises(TrainingDiverged, match="step 2"):
        train_policy_value(_small_net(), dataset, PolicyValueConfig(steps=5, report_every=2))


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"lr": float("nan")}, {"steps": 0}, {"epochs": -1.0},
                                 {"optimizer": "lbfgs"}, {"max_samples_in_memory": 0}])
def test_train_config_names_the_bad_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)
    with pytest.raises(ValueError, match="nope"):
        TrainConfig.from_dict({"nope": 1})


def test_lineage_lists_exactly_the_files_read(selfplay, tmp_path):
    _, _, records = selfplay
    directory = tmp_path / "selfplay" / "job"
    first = write_records(directory, "a.jsonl", records[:5])
    second = write_records(directory, "b.jsonl", records[5:8])
    empty = write_records(directory, "c.jsonl", [])
    paths = ["selfplay/job/a.jsonl", str(second), "selfplay/job/c.jsonl", "selfplay/job/gone.jsonl",
             "selfplay/job/a.jsonl"]
    scan = scan_window(tmp_path, paths)
    assert [f.path for f in scan.files] == ["selfplay/job/a.jsonl", "selfplay/job/b.jsonl", "selfplay/job/c.jsonl"]
    assert [f.sha256 for f in scan.files] == [hashlib.sha256(p.read_bytes()).hexdigest()
                                              for p in (first, second, empty)]
    assert [g.game_id for g in scan.games] == [r["game_id"] for r in records[:8]]
    assert [g.moves for g in scan.games] == [len(r["moves"]) for r in records[:8]] and scan.stats.files == 3
    chosen = [records[1]["game_id"], records[6]["game_id"]]
    assert list(read_window(scan.paths, chosen)) == [records[1], records[6]], "read again, one at a time"
    with pytest.raises(ValueError, match="outside"):
        scan_window(tmp_path / "selfplay", ["../elsewhere.jsonl"])


def test_a_dataset_streamed_to_a_cache_is_memory_mapped_and_equal_to_the_in_memory_one(selfplay, tmp_path):
    _, _, records = selfplay
    whole = build_dataset("tic_tac_toe", records)
    cached = build_dataset("tic_tac_toe", iter(records), cache_dir=tmp_path / "cache", capacity=moves_in(records))
    assert all(isinstance(column, np.memmap) for column in (cached.observations, cached.policies, cached.values))
    assert {p.name for p in (tmp_path / "cache").iterdir()} == {"observations.npy", "policies.npy", "values.npy"}
    for a, b in ((whole.observations, cached.observations), (whole.policies, cached.policies),
                 (whole.values, cached.values)):
        assert np.array_equal(a, b)
    assert cached.game_ids == whole.game_ids
    with pytest.raises(ValueError, match="capacity"):
        build_dataset("tic_tac_toe", iter(records), cache_dir=tmp_path / "other")


def test_the_block_loader_holds_at_most_its_cap_and_serves_each_row_once_an_epoch(tmp_path):
    rows = np.lib.format.open_memmap(tmp_path / "rows.npy", mode="w+", dtype=np.float32, shape=(1000, 1))
    rows[:, 0] = np.arange(1000)
    loader = BlockLoader((rows,), batch_size=10, max_samples_in_memory=100, device="cpu", seed=3)
    assert loader.streaming
    batches = loader.batches()
    seen = [int(v) for _ in range(100) for v in next(batches)[0][:, 0].tolist()]  # one epoch's batches
    assert sorted(seen) == list(range(1000)), "every row once an epoch"
    assert sorted(seen) != seen, "shuffled"
    assert loader.peak_resident <= 100
    tight = BlockLoader((rows[:100],), batch_size=10, max_samples_in_memory=15, device="cpu", seed=4)
    served = [int(v) for batch in zip(range(10), tight.batches()) for v in batch[1][0][:, 0].tolist()]
    assert sorted(served) == list(range(100)) and tight.peak_resident <= 15, "rows short of a batch are carried"
    small = BlockLoader((rows[:50],), batch_size=10, max_samples_in_memory=100, device="cpu", seed=3)
    assert not small.streaming and next(small.batches())[0].shape == (10, 1) and small.peak_resident == 50
    with pytest.raises(ValueError, match="max_samples_in_memory"):
        BlockLoader((rows,), batch_size=10, max_samples_in_memory=5, device="cpu", seed=3)
