"""Settings precedence, bind safety, and cluster.yaml against Ray's own validator."""
import copy
from pathlib import Path

import pytest
import yaml

from orchestrator.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_flags_beat_env_beat_cluster_yaml(tmp_path, monkeypatch):
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({"metadata": {"orchestrator": {"port": 9001, "peer_timeout_s": 3.0,
                                                                     "dead_after_s": 9.0, "node_id": "yaml"}}}))
    monkeypatch.setenv("P2P_NODE_ID", "env")
    settings = Settings(cluster_config=config)
    assert (settings.port, settings.peer_timeout_s, settings.node_id) == (9001, 3.0, "env")
    monkeypatch.setenv("P2P_PORT", "9002")
    assert Settings(cluster_config=config).port == 9002
    assert Settings(cluster_config=config, port=9003).port == 9003


def test_loopback_only_without_a_token(tmp_path):
    assert Settings().bind_host() == "127.0.0.1"
    with pytest.raises(ValueError):
        Settings(host="0.0.0.0").bind_host()
    assert Settings(host="0.0.0.0", insecure=True).bind_host() == "0.0.0.0"
    token_file = tmp_path / "token"
    token_file.write_text("abc\n")
    settings = Settings(auth_token_file=token_file)
    assert settings.token() == "abc" and settings.bind_host() == "0.0.0.0"


def test_inconsistent_timings_are_refused():
    with pytest.raises(ValueError):
        Settings(peer_timeout_s=10, dead_after_s=5)


def test_cluster_yaml_passes_rays_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    document = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(document)))
    settings = Settings(cluster_config=ROOT / "cluster.yaml")
    assert settings.port == 8770 and "hex7" in settings.games
    assert any("orchestrator start" in command for command in document["head_start_ray_commands"])
    assert any("orchestrator start" in command for command in document["worker_start_ray_commands"])


def test_game_catalog_from_settings_adds_games_and_refuses_redefinition():
    from orchestrator.play.games import BUILTIN, GameCatalog, UnknownGame

    catalog = GameCatalog.from_settings({"hex7": "hex(board_size=7)"})
    assert catalog.spec("hex7").num_actions == 49
    assert "hex7" in catalog.board_types() and "hex7" not in BUILTIN.board_types()
    with pytest.raises(UnknownGame):
        BUILTIN.spec("hex7")  # built once, passed in: no process-wide registration leaks
    with pytest.raises(UnknownGame):
        GameCatalog.from_settings({"square8": "chess"})
    with pytest.raises(UnknownGame):
        GameCatalog.from_settings({"broken": "no_such_game"})
    with pytest.raises(UnknownGame):
        GameCatalog.from_settings({"openspiel:x": "tic_tac_toe"})


def test_a_setting_nobody_reads_is_refused_by_name_from_every_source(tmp_path, monkeypatch, capsys):
    """A misspelt setting must not leave the default in force without a word (flags, P2P_* variables,
    cluster.yaml alike); the answer names it and the nearest real setting."""
    from pydantic import ValidationError

    from orchestrator.cli import main

    with pytest.raises(ValidationError, match="heartbeat_interval"):
        Settings(heartbeat_interval=1.0)
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({"metadata": {"orchestrator": {"port": 9001, "heartbeat_interval": 1.0}}}))
    with pytest.raises(ValueError, match=r"metadata.orchestrator: unknown setting: heartbeat_interval "
                                         r"\(did you mean heartbeat_interval_s\?\)"):
        Settings(cluster_config=config)
    config.write_text(yaml.safe_dump({"metadata": {"orchestrator": {"port": 9001}}}))
    monkeypatch.setenv("P2P_DEAD_AFTER", "9")
    monkeypatch.setenv("P2P_RAY_ADDRESS", "10.0.0.1:6379")  # ray_address is read from RAY_ADDRESS only
    with pytest.raises(ValueError, match=r"P2P_DEAD_AFTER \(did you mean P2P_DEAD_AFTER_S\?\), P2P_RAY_ADDRESS"):
        Settings(cluster_config=config)
    assert main(["start", "--cluster-config", str(config)]) != 0, "the node does not start"
    assert "P2P_DEAD_AFTER" in capsys.readouterr().err
    monkeypatch.delenv("P2P_DEAD_AFTER")
    monkeypatch.delenv("P2P_RAY_ADDRESS")
    monkeypatch.setenv("P2P_DEAD_AFTER_S", "40")
    assert Settings(cluster_config=config).dead_after_s == 40.0
