"""Checkpoint files for policy/value networks: atomic writes, sha256 integrity, lineage metadata.

A checkpoint is one `torch.save` payload: the network config, its weights, and a metadata dict
(parent model id, the data window it was trained on, the code version, creation time, and any
extra training settings). It is written to a temp file in the target directory, fsynced and
renamed, so a reader sees the old file or the whole new one, never half of one. The sha256 of the
bytes is returned (the model registry keeps it) and written beside the file as `<name>.sha256`;
loading recomputes it and refuses a file whose digest differs from the expected one. Other
networks (the NNUE of `orchestrator.learn.nnue`) are kept in the same format under their own
`architecture` tag, through `save_network` and `read_network`.

A training run also leaves a resume state now and then (`save_training_state`): its weights,
optimizer moments and step with what it was training on, in one atomic file that carries its own
sha256 in a first line. Not a sidecar: the state is replaced every few minutes, and a process
killed between replacing a file and then its sidecar would leave a state that no longer matches
its digest, so the restarted run would start over. A restarted run reads either a whole state it
can trust or none.

Registered models live at `<data_dir>/models/<model_id>.pt` (`model_path`), which is where the
self-play job looks for `model:<id>` agents unless its context brings its own loader.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from orchestrator.fileio import write_atomic

from orchestrator.nn.resnet import PolicyValueNet, ResNetConfig

FORMAT_VERSION = 1
ARCHITECTURE = "resnet"
TRAINING_STATE = "training_state"  # a payload's `architecture` for a resume state, not a network
TRAINING_STATE_HEADER = b"p2p-training-state sha256="  # then the hex digest of the rest, and a newline
SIDECAR_SUFFIX = ".sha256"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted or read: digest mismatch, missing digest, bad format."""


@dataclass(frozen=True)
class Checkpoint:
    model: PolicyValueNet
    config: ResNetConfig
    metadata: dict[str, Any]
    sha256: str


def model_path(data_dir: str | os.PathLike[str], model_id: str) -> Path:
    if not _MODEL_ID_RE.match(model_id) or model_id in (".", ".."):
        raise ValueError(f"invalid model id {model_id!r}: 1-128 of [A-Za-z0-9._-]")
    return Path(data_dir) / "models" / f"{model_id}.pt"


def _serialised(payload: dict[str, Any]) -> tuple[bytes, str]:
    """A payload's bytes as torch writes them, and their sha256."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def write_payload(path: str | os.PathLike[str], payload: dict[str, Any]) -> str:
    """Save a torch payload atomically with its `.sha256` sidecar; returns the sha256."""
    data, sha256 = _serialised(payload)
    target = Path(path)
    write_atomic(target, data)
    write_atomic(target.with_name(target.name + SIDECAR_SUFFIX), (sha256 + "\n").encode())
    return sha256


def lineage_metadata(*, code_version: str, parent: str | None, data_window: Mapping[str, Any] | None,
                     extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """What every saved network carries about where it came from, as plain JSON data."""
    metadata = {
        "parent": parent,
        "data_window": dict(data_window) if data_window is not None else None,
        "code_version": code_version,
        "created_at": time.time(),
        "extra": dict(extra) if extra is not None else {},
    }
    try:
        # Round-trip through JSON so metadata stays plain data that weights-only loading accepts.
        return json.loads(json.dumps(metadata))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata must be JSON-serialisable: {exc}") from None


def save_network(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    architecture: str,
    *,
    code_version: str,
    parent: str | None = None,
    data_window: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write any network whose `config` has a `to_dict()`, tagged `architecture`, with its lineage
    atomically; returns the sha256 of the file's bytes. `read_network` is its inverse."""
    metadata = lineage_metadata(code_version=code_version, parent=parent, data_window=data_window, extra=extra)
    payload = {
        "format": FORMAT_VERSION,
        "architecture": architecture,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata,
    }
    return write_payload(path, payload)


def read_network(path: str | os.PathLike[str], architecture: str,
                 expected_sha256: str | None = None) -> tuple[dict[str, Any], str]:
    """(payload, sha256) of a `save_network` file tagged `architecture`, verified against
    `expected_sha256`, or else the sidecar digest beside it. Raises CheckpointError."""
    target = Path(path)
    if expected_sha256 is None:
        sidecar = target.with_name(target.name + SIDECAR_SUFFIX)
        if not sidecar.is_file():
            raise CheckpointError(f"no sha256 given for {target} and no {sidecar.name} beside it")
        expected_sha256 = sidecar.read_text().strip()
    expected_sha256 = expected_sha256.lower()
    if not _SHA256_RE.match(expected_sha256):
        raise CheckpointError(f"expected sha256 for {target} is not 64 hex digits: {expected_sha256!r}")
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {target} does not exist") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise CheckpointError(
            f"checkpoint {target} is corrupt or was replaced: sha256 {actual} != expected {expected_sha256}"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for undecodable payloads
        raise CheckpointError(f"checkpoint {target} cannot be decoded: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION or payload.get("architecture") != architecture:
        raise CheckpointError(f"checkpoint {target} is not a format-{FORMAT_VERSION} {architecture} checkpoint")
    return payload, actual


def save_checkpoint(
    path: str | os.PathLike[str],
    model: PolicyValueNet,
    *,
    code_version: str,
    parent: str | None = None,
    data_window: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write `model` with its lineage atomically; returns the sha256 of the file's bytes."""
    return save_network(path, model, ARCHITECTURE, code_version=code_version, parent=parent,
                        data_window=data_window, extra=extra)


def load_checkpoint(
    path: str | os.PathLike[str], expected_sha256: str | None = None, device: str = "cpu"
) -> Checkpoint:
    """Load and verify a checkpoint against `expected_sha256`, or else the sidecar digest beside it.

    The returned model is in eval mode on `device`.
    """
    payload, sha256 = read_network(path, ARCHITECTURE, expected_sha256)
    config = ResNetConfig.from_dict(payload["config"])
    model = PolicyValueNet(config)
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return Checkpoint(model=model, config=config, metadata=payload["metadata"], sha256=sha256)


def save_training_state(path: str | os.PathLike[str], state: Mapping[str, Any], about: Mapping[str, Any]) -> str:
    """Write a training run's resume state (`orchestrator.learn.training.training_state`) atomically,
    with `about` (plain JSON: what run and data it belongs to), its sha256 in the file; returns it."""
    try:
        about = json.loads(json.dumps(dict(about)))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"training state description must be JSON-serialisable: {exc}") from None
    data, sha256 = _serialised({"format": FORMAT_VERSION, "architecture": TRAINING_STATE, "about": about,
                                "state": dict(state)})
    write_atomic(Path(path), TRAINING_STATE_HEADER + sha256.encode() + b"\n" + data)
    return sha256


def load_training_state(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(about, state) of a resume state checked against the digest it carries; None if there is none.
    CheckpointError for one that is torn, corrupt or of another format."""
    target = Path(path)
    try:
        header, _, data = target.read_bytes().partition(b"\n")
    except FileNotFoundError:
        return None
    if not header.startswith(TRAINING_STATE_HEADER):
        raise CheckpointError(f"{target} is not a training state of this version (no digest line)")
    if hashlib.sha256(data).hexdigest().encode() != header[len(TRAINING_STATE_HEADER):]:
        raise CheckpointError(f"training state {target} does not match the digest it carries")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for undecodable payloads
        raise CheckpointError(f"training state {target} cannot be decoded: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION \
            or payload.get("architecture") != TRAINING_STATE:
        raise CheckpointError(f"{target} is not a format-{FORMAT_VERSION} training state")
    return payload["about"], payload["state"]


def remove_training_state(path: str | os.PathLike[str]) -> None:
    Path(path).unlink(missing_ok=True)
