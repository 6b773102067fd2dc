"""The model registry's records turned into things agents use, and `agent_params` records built.

The registry is the cluster store's kind `models`: one document per model, a `ModelRecord`
(`to_dict()`) plus, for `agent_params`, the parameters themselves under `params`. What
`AgentContext.load_model(id)` gets back for a record (`resolve_model`):

    policy_value   the network (`PolicyValueNet`), loaded from `<data_dir>/<path>` and verified
                   against the record's sha256 (a replaced or corrupt file is refused)
    nnue           an `NNUEEvaluator` over the network, verified the same way (what `minimax_<d>` takes)
    agent_params   the parameter dict, carried inline in the record so that any node can load it
                   without the file; its canonical-JSON sha256 must equal the record's sha256

Checkpoint files live on the node that trained them until data sync copies them; a node without
the file gets a `ModelUnavailable` naming the path.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Mapping

from orchestrator import __version__
from orchestrator.learn.model_records import DataWindow, ModelRecord, game_ids_digest

REGISTRY_KIND = "models"


class ModelUnavailable(ValueError):
    """A registered model that cannot be loaded here: missing file, digest mismatch, bad inline params."""


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, finite numbers only: the same params always give the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def params_sha256(params: Mapping[str, float]) -> str:
    return hashlib.sha256(canonical_json(dict(params))).hexdigest()


def params_path(model_id: str) -> str:
    """Where an agent_params model's JSON sits, relative to a data directory."""
    return f"models/{model_id}.json"


def agent_params_doc(model_id: str, board_type: str, params: Mapping[str, float], *,
                     training_config: Mapping[str, Any], metrics: Mapping[str, Any],
                     created_at: float | None = None) -> dict[str, Any]:
    """The registry document of tuned agent parameters (status candidate). No games were recorded
    to produce them, so the data window is empty; what produced them is in `training_config`."""
    params = {name: float(value) for name, value in params.items()}
    record = ModelRecord(
        model_id=model_id, board_type=board_type, kind="agent_params", parent=None,
        created_at=time.time() if created_at is None else created_at,
        data_window=DataWindow(files=(), game_count=0, game_ids_digest=game_ids_digest(())),
        training_config=dict(training_config), metrics=dict(metrics), code_version=__version__,
        path=params_path(model_id), sha256=params_sha256(params), status="candidate")
    return {**record.to_dict(), "params": params}


def resolve_model(doc: Mapping[str, Any], data_dir: str | Path | None, device: str = "cpu") -> Any:
    """What an agent loads for a registry document (see the module docstring)."""
    record = ModelRecord.from_dict(doc)
    if record.kind == "agent_params":
        params = doc.get("params")
        if not isinstance(params, Mapping):
            raise ModelUnavailable(f"model {record.model_id}: agent_params record carries no params")
        if params_sha256(params) != record.sha256:
            raise ModelUnavailable(f"model {record.model_id}: params do not match the record's sha256")
        return dict(params)
    if data_dir is None:
        raise ModelUnavailable(f"model {record.model_id} is a {record.kind} file; this context has no data directory")
    path = Path(data_dir) / record.path
    if not path.is_file():
        raise ModelUnavailable(f"model {record.model_id}: {record.path} is not on this node (trained elsewhere; "
                               f"sync it first)")
    # Imported here: agent_params lookups (CMA-ES workers, the CMA-ES actor) never need torch.
    from orchestrator.nn.checkpoint import CheckpointError, load_checkpoint
    try:
        if record.kind == "policy_value":
            return load_checkpoint(path, record.sha256, device).model
        from orchestrator.learn.nnue import NNUEEvaluator, load_nnue
        model, _ = load_nnue(path, record.sha256, device)
        return NNUEEvaluator(model, device)
    except CheckpointError as exc:
        raise ModelUnavailable(f"model {record.model_id}: {exc}") from None
