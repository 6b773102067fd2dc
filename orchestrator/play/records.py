"""Self-play game records: one JSON object per line, written in whole files, read back defensively.

Writers never append: each flush is a new file written to a temp name in the same directory,
fsynced and renamed (`write_records`), so a killed writer leaves whole files or nothing. Readers
(`read_games`) still guard against files that were truncated or edited by hand: a line that does
not parse, or a last line without its newline, is torn; a line that parses but lacks the schema
is invalid; a game_id seen before is a duplicate. All three are skipped and counted.

A record (keys and types checked by `validate_record`):

    game_id        "<job_id>-<index:07d>", unique per job and game index, so a restarted job
                   can tell which games exist and never writes one twice
    game_index     int; job_id, node_id str; attempt int
    board_type     the catalogue name; game: the OpenSpiel game string
    agents         agent name per seat; model_ids: model id (or null) per seat
    seed           the game's own seed (move sampling)
    moves          action ids, in order
    policies       per move, the search's distribution as {"<action>": prob} (JSON keys are strings)
    outcome        returns per player at the end; length: number of moves
    termination    "terminal", or "max_length" when the move limit ended the game
    code_version   CODE_VERSION; started_at, finished_at: ISO 8601 UTC
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from orchestrator.fileio import write_atomic

CODE_VERSION = "0.1.0"
TERMINATIONS = ("terminal", "max_length")

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "game_id": str,
    "game_index": int,
    "job_id": str,
    "node_id": str,
    "attempt": int,
    "board_type": str,
    "game": str,
    "agents": list,
    "model_ids": list,
    "seed": int,
    "moves": list,
    "policies": list,
    "outcome": list,
    "length": int,
    "termination": str,
    "code_version": str,
    "started_at": str,
    "finished_at": str,
}


def game_id(job_id: str, index: int) -> str:
    return f"{job_id}-{index:07d}"


def validate_record(record: Any) -> str | None:
    """None for a well-formed record, else why it is not one."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for key, kind in _FIELDS.items():
        value = record.get(key)
        # bool is an int subclass; a true/false where a number belongs is still wrong.
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"field {key!r} missing or not {getattr(kind, '__name__', kind)}"
    length = record["length"]
    if len(record["moves"]) != length or len(record["policies"]) != length:
        return "moves/policies do not match length"
    if not all(isinstance(m, int) and not isinstance(m, bool) for m in record["moves"]):
        return "moves must be integers"
    if not all(isinstance(p, dict) for p in record["policies"]):
        return "policies must be objects"
    seats = len(record["agents"])
    if seats < 1 or len(record["model_ids"]) != seats or len(record["outcome"]) != seats:
        return "agents/model_ids/outcome must have one entry per seat"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in record["outcome"]):
        return "outcome must be numbers"
    if record["termination"] not in TERMINATIONS:
        return f"termination must be one of {TERMINATIONS}"
    return None


def write_records(directory: Path, name: str, records: list[dict[str, Any]]) -> Path:
    """Write `records` as `<directory>/<name>` atomically; an existing game file is never overwritten."""
    payload = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
    return write_atomic(Path(directory) / name, payload, overwrite=False)


def game_files(directory: Path) -> list[Path]:
    """The finished game files in a directory, in name order (temp files of killed writers excluded)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.jsonl") if p.is_file() and not p.name.startswith("."))


@dataclass
class ReadStats:
    """Counters filled in by `read_games` (mutable on purpose: it accumulates while the generator runs)."""

    files: int = 0
    records: int = 0
    torn: int = 0
    invalid: int = 0
    duplicates: int = 0

    @property
    def skipped(self) -> int:
        return self.torn + self.invalid + self.duplicates


def read_games(
    paths: Iterable[str | os.PathLike[str]], stats: ReadStats | None = None, seen: set[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield valid records from JSONL files, skipping torn lines, invalid records and repeated game_ids.

    `stats` (if given) counts what was read and skipped; `seen` (if given) holds the game_ids
    already yielded and is extended, so several calls can share one de-duplication set.
    """
    stats = stats if stats is not None else ReadStats()
    seen = seen if seen is not None else set()
    for path in paths:
        stats.files += 1
        with open(path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    stats.torn += 1  # every writer ends its lines; a missing newline means a cut file
                    continue
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    stats.torn += 1
                    continue
                if validate_record(record) is not None:
                    stats.invalid += 1
                    continue
                if record["game_id"] in seen:
                    stats.duplicates += 1
                    continue
                seen.add(record["game_id"])
                stats.records += 1
                yield record
