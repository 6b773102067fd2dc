"""Leadership history: one record per term, and a checker for the election's safety promises.

A term is (node_id, epoch, start, end), valid in [start, end), in a reference time shared by every
record that is compared. The simulation uses its true time. A real cluster uses wall time
(`time.time()`), converted from the node's monotonic clock when the term is written
(`TermRecord.from_monotonic`); wall clocks on different machines disagree by their NTP error, and
the conversion inherits it, so an overlap shorter than that bound is not proof of a violation:
pass the bound as `slack_s`. Epoch checks compare no clocks and need no slack.

`find_overlaps` reports three things that must never happen: two terms of different nodes that
intersect, one epoch held by two nodes, and an epoch lower than an earlier one in a node's history.

What survives a failure is the JSONL file: each term is one appended, fsynced line. A reader skips
a torn final line (a crash mid-append) and rejects any other malformed line.

    python -m orchestrator.cluster.election_history terms-*.jsonl [--slack-s 0.05]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence

OVERLAP = "overlap"
EPOCH_REUSED = "epoch_reused"
EPOCH_BACKWARDS = "epoch_backwards"


class _LocalTerm(Protocol):
    epoch: int
    start: float
    end: float


@dataclass(frozen=True)
class TermRecord:
    node_id: str
    epoch: int
    start: float
    end: float

    @classmethod
    def from_monotonic(cls, node_id: str, term: _LocalTerm, *, monotonic_now: float,
                       wall_now: float) -> "TermRecord":
        """Map a term in the node's monotonic clock to wall time, using both clocks read together."""
        offset = wall_now - monotonic_now
        return cls(node_id, term.epoch, term.start + offset, term.end + offset)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> "TermRecord":
        data = json.loads(line)
        return cls(str(data["node_id"]), int(data["epoch"]), float(data["start"]), float(data["end"]))


@dataclass(frozen=True)
class Overlap:
    kind: str  # OVERLAP, EPOCH_REUSED or EPOCH_BACKWARDS
    first: TermRecord
    second: TermRecord

    def describe(self) -> str:
        a, b = self.first, self.second
        if self.kind == OVERLAP:
            return (f"overlap of {max(0.0, min(a.end, b.end) - max(a.start, b.start)):.6f}s: "
                    f"{a.node_id}@{a.epoch} [{a.start:.6f}, {a.end:.6f}) and "
                    f"{b.node_id}@{b.epoch} [{b.start:.6f}, {b.end:.6f})")
        if self.kind == EPOCH_REUSED:
            return f"epoch {a.epoch} held by both {a.node_id} and {b.node_id}"
        return f"{b.node_id} went back from epoch {a.epoch} to {b.epoch}"


def find_overlaps(records: Iterable[TermRecord], *, slack_s: float = 0.0) -> list[Overlap]:
    """Every violation among `records`; each node's records must be in the order it wrote them."""
    records = list(records)
    found: list[Overlap] = []

    highest_by_node: dict[str, TermRecord] = {}
    first_by_epoch: dict[int, TermRecord] = {}
    reported_reuse: set[tuple[int, str]] = set()
    for record in records:
        highest = highest_by_node.get(record.node_id)
        if highest is not None and record.epoch < highest.epoch:
            found.append(Overlap(EPOCH_BACKWARDS, highest, record))
        if highest is None or record.epoch > highest.epoch:
            highest_by_node[record.node_id] = record
        holder = first_by_epoch.setdefault(record.epoch, record)
        if holder.node_id != record.node_id and (record.epoch, record.node_id) not in reported_reuse:
            reported_reuse.add((record.epoch, record.node_id))
            found.append(Overlap(EPOCH_REUSED, holder, record))

    # Sweep by start: a term that ends (less slack) before the current start cannot meet any later one.
    active: list[TermRecord] = []
    for record in sorted((r for r in records if r.end > r.start), key=lambda r: (r.start, r.end)):
        active = [a for a in active if a.end - slack_s > record.start]
        for other in active:
            if other.node_id != record.node_id and min(other.end, record.end) - record.start > slack_s:
                found.append(Overlap(OVERLAP, other, record))
        active.append(record)
    return found


def append_term(path: str | os.PathLike[str], record: TermRecord) -> None:
    """Append one term and fsync it, so a written term survives a crash of the writer."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(record.to_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_terms(path: str | os.PathLike[str]) -> list[TermRecord]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    terms: list[TermRecord] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            terms.append(TermRecord.from_json(line))
        except (ValueError, KeyError, TypeError) as error:
            if number == len(lines):
                break  # torn by a crash mid-append
            raise ValueError(f"{path}:{number}: not a term record ({error})") from error
    return terms


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check leadership histories for overlapping terms.")
    parser.add_argument("files", nargs="+", help="JSONL term files, one or more per node")
    parser.add_argument("--slack-s", type=float, default=0.0,
                        help="ignore overlaps shorter than this (the bound on wall-clock disagreement)")
    args = parser.parse_args(argv)
    records = [term for path in args.files for term in read_terms(path)]
    violations = find_overlaps(records, slack_s=args.slack_s)
    for violation in violations:
        print(f"{violation.kind}: {violation.describe()}")
    print(f"{len(records)} terms, {len(violations)} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
