"""Residual policy/value net shapes and checkpoint integrity (atomic save, sha256 verification, lineage)."""
from __future__ import annotations

import pytest
import torch

from orchestrator.nn.checkpoint import (CheckpointError, load_checkpoint, load_training_state, model_path,
                                        remove_training_state, save_checkpoint, save_training_state)
from orchestrator.nn.resnet import PolicyValueNet, ResNetConfig, inference_copy
from orchestrator.play.games import BUILTIN


@pytest.mark.parametrize("board_type", ["square8", "tic_tac_toe", "connect_four", "hex", "openspiel:mancala"])
def test_output_shapes_follow_the_game(board_type):
    spec = BUILTIN.spec(board_type)
    config = ResNetConfig.for_game(spec, blocks=1, channels=8)
    net = PolicyValueNet(config).eval()
    logits, values = net(torch.zeros(5, *spec.observation_shape))
    assert logits.shape == (5, spec.num_actions)
    assert values.shape == (5, 1)  # two-player games: one value, for the player to move
    assert values.abs().max() <= 1.0


def test_default_size_for_othello_is_6x64_and_small_boards_get_small_nets():
    assert ResNetConfig.for_game(BUILTIN.spec("square8")) == ResNetConfig((3, 8, 8), 65, 2, blocks=6, channels=64)
    tiny = ResNetConfig.for_game(BUILTIN.spec("tic_tac_toe"))
    assert (tiny.blocks, tiny.channels) < (6, 64)


def test_more_than_two_players_get_one_value_per_seat():
    config = ResNetConfig((4, 5, 5), num_actions=10, num_players=3, blocks=1, channels=8)
    _, values = PolicyValueNet(config)(torch.zeros(2, 4, 5, 5))
    assert values.shape == (2, 3)


def _trained_looking_net() -> PolicyValueNet:
    torch.manual_seed(0)
    net = PolicyValueNet(ResNetConfig((3, 8, 8), 65, blocks=2, channels=16))
    net.train()
    with torch.no_grad():  # moves the batch-norm running statistics away from their defaults
        for _ in range(3):
            net(torch.randn(32, 3, 8, 8))
    return net.eval()


def test_inference_copy_matches_the_original():
    net = _trained_looking_net()
    fused = inference_copy(net)
    x = torch.randn(7, 3, 8, 8)
    with torch.inference_mode():
        (a_logits, a_values), (b_logits, b_values) = net(x), fused(x)
    torch.testing.assert_close(a_logits, b_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a_values, b_values, atol=1e-5, rtol=1e-5)


def test_checkpoint_round_trip_keeps_weights_and_lineage(tmp_path):
    net = _trained_looking_net()
    path = model_path(tmp_path, "gen-2")
    digest = save_checkpoint(path, net, code_version="0.1.0", parent="gen-1",
                             data_window={"from": "job-a-0000000", "games": 5000}, extra={"lr": 0.01})
    assert len(digest) == 64
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    loaded = load_checkpoint(path, expected_sha256=digest)
    assert loaded.sha256 == digest
    assert loaded.config == net.config
    assert loaded.metadata["parent"] == "gen-1"
    assert loaded.metadata["data_window"] == {"from": "job-a-0000000", "games": 5000}
    assert loaded.metadata["code_version"] == "0.1.0"
    assert loaded.metadata["extra"] == {"lr": 0.01}
    x = torch.randn(3, 3, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), net(x))
    assert load_checkpoint(path).sha256 == digest  # the sidecar digest is used when none is given


def test_sha256_mismatch_is_rejected(tmp_path):
    path = tmp_path / "m.pt"
    digest = save_checkpoint(path, _trained_looking_net(), code_version="0.1.0")
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path, expected_sha256="0" * 64)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path, expected_sha256=digest)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_missing_digest_and_bad_model_ids_are_refused(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, _trained_looking_net(), code_version="0.1.0")
    path.with_name("m.pt.sha256").unlink()
    with pytest.raises(CheckpointError, match="no sha256"):
        load_checkpoint(path)
    with pytest.raises(ValueError):
        model_path(tmp_path, "../escape")


def test_a_resume_state_is_one_file_that_carries_its_digest(tmp_path):
    """The state is replaced while a run goes on: a digest in a second file, replaced after it, would not
    match the state if the process died between the two replacements, and the run would start over."""
    path = tmp_path / "job.resume"
    assert load_training_state(path) is None
    save_training_state(path, {"step": 1}, {"job": "j"})
    digest = save_training_state(path, {"step": 2}, {"job": "j"})
    assert [p.name for p in tmp_path.iterdir()] == ["job.resume"], "nothing beside it to fall out of step"
    assert load_training_state(path) == ({"job": "j"}, {"step": 2})
    assert path.read_bytes().split(b"\n", 1)[0].endswith(digest.encode())
    header, rest = path.read_bytes().split(b"\n", 1)
    path.write_bytes(header + b"\n" + rest[:-1])
    with pytest.raises(CheckpointError, match="does not match"):
        load_training_state(path)
    path.write_bytes(rest)  # a payload without its digest line (an earlier version's format)
    with pytest.raises(CheckpointError, match="no digest line"):
        load_training_state(path)
    remove_training_state(path)
    assert not path.exists()
