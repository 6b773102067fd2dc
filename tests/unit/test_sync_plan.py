"""Planning copies a file only where it is missing or differs, never to a node that holds it."""
from orchestrator.sync.manifest import FileEntry
import heapq
import itertools

from orchestrator.sync.plan import (PRIORITY_DEFAULT, PRIORITY_MODEL, PRIORITY_TRAINING, Transfer, merge_manifests,
                                    plan_transfers, queue_entries)


def entry(path, sha, mtime=100.0, size=10):
    return FileEntry(path, size, mtime, int(mtime * 1e9), sha * 64 if len(sha) == 1 else sha, "selfplay", "b")


def manifests(**nodes):
    return {node: {e.path: e for e in files} for node, files in nodes.items()}


def test_copies_only_missing_and_differing():
    same = entry("selfplay/b/j/a.jsonl", "a")
    m = manifests(n1=[same, entry("selfplay/b/j/b.jsonl", "b", mtime=200)],
                  n2=[same, entry("selfplay/b/j/b.jsonl", "c", mtime=100)],
                  n3=[])
    plan = plan_transfers(m, ["selfplay/**"])
    got = sorted((t.path, t.source_node, t.target_node, t.sha256[0]) for t in plan.transfers)
    # a.jsonl: n3 lacks it; b.jsonl: the newest version (n1's) goes to n2 (differs) and n3 (missing)
    assert got == [("selfplay/b/j/a.jsonl", "n1", "n3", "a"),
                   ("selfplay/b/j/b.jsonl", "n1", "n2", "b"),
                   ("selfplay/b/j/b.jsonl", "n1", "n3", "b")]
    assert plan.skipped == 3  # a on n1 and n2, b on n1
    assert all(t.target_node not in (t.source_node,) for t in plan.transfers)


def test_load_is_spread_over_holders():
    files = [entry(f"selfplay/b/j/{i}.jsonl", "abcdef0123456789"[i]) for i in range(4)]
    plan = plan_transfers(manifests(n1=files, n2=files, n3=[]), ["selfplay/**"])
    sources = sorted(t.source_node for t in plan.transfers)
    assert sources == ["n1", "n1", "n2", "n2"]


def test_named_source_targets_and_since():
    m = manifests(n1=[entry("selfplay/b/j/a.jsonl", "a", mtime=50), entry("selfplay/b/j/b.jsonl", "b", mtime=500)],
                  n2=[entry("selfplay/b/j/b.jsonl", "c", mtime=900)], n3=[])
    plan = plan_transfers(m, ["selfplay/**"], 100, source_node="n1", target_nodes=["n2"], priority=PRIORITY_TRAINING)
    # n2's newer copy differs from the named source's: the source's version is what was asked for
    assert [(t.path, t.target_node, t.sha256[0], t.priority) for t in plan.transfers] == [
        ("selfplay/b/j/b.jsonl", "n2", "b", PRIORITY_TRAINING)]


def test_nothing_to_do_when_everyone_has_everything():
    files = [entry("selfplay/b/j/a.jsonl", "a")]
    plan = plan_transfers(manifests(n1=files, n2=files), ["selfplay/**"])
    assert plan.transfers == () and plan.skipped == 2


def test_merge_shows_holders_and_differences():
    m = manifests(n1=[entry("selfplay/b/j/a.jsonl", "a"), entry("models/m.pt", "m")],
                  n2=[entry("selfplay/b/j/a.jsonl", "b")])
    merged = merge_manifests(m)
    assert merged["selfplay/b/j/a.jsonl"]["differs"] and merged["selfplay/b/j/a.jsonl"]["copies"] == 2
    assert not merged["models/m.pt"]["differs"] and list(merged["models/m.pt"]["holders"]) == ["n1"]


def test_a_pushed_best_model_leaves_the_queue_before_transfers_that_arrived_earlier():
    def job(priority, *paths):
        return [Transfer(p, "a" * 64, 10, "src", "me", priority).to_dict() for p in paths]
    arrival = itertools.count()
    heap = []
    for entry in queue_entries("bulk", job(PRIORITY_DEFAULT, "s/0", "s/1", "s/2"), {"1": "done"}, arrival):
        heapq.heappush(heap, entry)  # index 1 is already done: it is not queued again
    for entry in queue_entries("window", job(PRIORITY_TRAINING, "t/0"), {}, arrival):
        heapq.heappush(heap, entry)
    for entry in queue_entries("model-x", job(PRIORITY_MODEL, "models/best.pt"), {}, arrival):
        heapq.heappush(heap, entry)
    order = [heapq.heappop(heap)[2:] for _ in range(len(heap))]
    assert order == [("model-x", 0), ("window", 0), ("bulk", 0), ("bulk", 2)]
