"""The leadership history checker and its JSONL files."""
from __future__ import annotations

import pytest

from orchestrator.cluster.election import Term
from orchestrator.cluster.election_history import (EPOCH_BACKWARDS, EPOCH_REUSED, OVERLAP, TermRecord,
                                                   append_term, find_overlaps, main, read_terms)


def term(node: str, epoch: int, start: float, end: float) -> TermRecord:
    return TermRecord(node, epoch, start, end)


def kinds(records, **kwargs) -> list[str]:
    return [o.kind for o in find_overlaps(records, **kwargs)]


def test_clean_history_has_no_findings():
    history = [term("a", 1, 0.0, 10.0), term("b", 2, 10.0, 20.0), term("a", 3, 25.0, 30.0),
               term("a", 4, 30.0, 31.0)]
    assert find_overlaps(history) == []


def test_overlapping_terms_of_two_nodes_are_reported():
    first, second = term("a", 1, 0.0, 10.0), term("b", 2, 9.5, 20.0)
    [found] = find_overlaps([second, first])
    assert found.kind == OVERLAP and {found.first, found.second} == {first, second}
    assert "0.500000s" in found.describe()


def test_overlap_is_found_past_a_long_term_in_between():
    history = [term("a", 1, 0.0, 100.0), term("b", 2, 1.0, 2.0), term("c", 3, 50.0, 60.0)]
    assert sorted(kinds(history)) == [OVERLAP, OVERLAP]


def test_slack_forgives_overlaps_within_the_clock_error():
    history = [term("a", 1, 0.0, 10.0), term("b", 2, 9.99, 20.0)]
    assert kinds(history, slack_s=0.05) == []
    assert kinds(history, slack_s=0.001) == [OVERLAP]


def test_empty_terms_and_a_nodes_own_terms_never_overlap():
    assert find_overlaps([term("a", 1, 5.0, 5.0), term("b", 2, 4.0, 6.0)]) == []
    assert find_overlaps([term("a", 1, 0.0, 10.0), term("a", 2, 5.0, 15.0)]) == []


def test_epoch_shared_by_two_nodes_is_reported_once_per_node():
    history = [term("a", 3, 0.0, 1.0), term("b", 3, 5.0, 6.0), term("b", 3, 7.0, 8.0)]
    [found] = find_overlaps(history)
    assert found.kind == EPOCH_REUSED and (found.first.node_id, found.second.node_id) == ("a", "b")


def test_epoch_going_backwards_in_one_nodes_history_is_reported():
    history = [term("a", 5, 0.0, 1.0), term("a", 4, 2.0, 3.0), term("b", 6, 4.0, 5.0)]
    [found] = find_overlaps(history)
    assert found.kind == EPOCH_BACKWARDS and (found.first.epoch, found.second.epoch) == (5, 4)
    assert "from epoch 5 to 4" in found.describe()


def test_from_monotonic_maps_a_local_term_onto_wall_time():
    record = TermRecord.from_monotonic("a", Term(7, 100.0, 110.0), monotonic_now=120.0, wall_now=1_700_000_000.0)
    assert record == TermRecord("a", 7, 1_699_999_980.0, 1_699_999_990.0)


def test_jsonl_round_trip_and_torn_last_line(tmp_path):
    path = tmp_path / "terms-a.jsonl"
    written = [term("a", 1, 0.0, 1.5), term("a", 2, 3.0, 4.25)]
    for record in written:
        append_term(path, record)
    assert read_terms(path) == written
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"node_id": "a", "epo')  # a crash mid-append
    assert read_terms(path) == written


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "terms.jsonl"
    path.write_text('{"node_id": "a", "epoch": 1, "start": 0, "end": 1}\nnot json\n'
                    '{"node_id": "a", "epoch": 2, "start": 2, "end": 3}\n')
    with pytest.raises(ValueError, match="terms.jsonl:2"):
        read_terms(path)


def test_command_line_checker(tmp_path, capsys):
    good, bad = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    append_term(good, term("a", 1, 0.0, 10.0))
    append_term(bad, term("b", 1, 5.0, 15.0))
    assert main([str(good)]) == 0
    assert main([str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "overlap:" in out and "epoch_reused:" in out and "2 terms, 2 violations" in out
    assert main([str(good), str(bad), "--slack-s", "100"]) == 1  # epochs need no clock to judge
