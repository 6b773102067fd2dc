"""TournamentActor: tournaments, A/B tests, gauntlets and ratings; one detached singleton on the Ray head.

A driver thread hands each running run's games out as `play_batch` Ray tasks (through `GameTasks`,
actors/eval_dispatch.py), never more tasks at once than the alive nodes have CPUs, and stores every
game that comes back. A node
with GPUs gets the games of network agents in larger batches holding a GPU share (see
orchestrator.play.eval_placement).

What survives a failure: everything, in the cluster store. Each evaluation game is one record
(kind `eval_games`, key its deterministic game id, written once: a game id already stored is never
stored or counted again). Runs are records (`tournaments`, `abtests`, `gauntlets`) holding what was
asked and how they ended; their progress is recomputed from the game records. Writes go through
the current leader's ElectionActor (`leader_write`), so they carry its epoch; while no node leads,
played games wait in memory and nothing new is handed out. Commands carry the caller's epoch and
are refused once a newer term has begun. When Ray restarts this actor, or the leader changes, it
reloads every record and hands out only the games that have no stored result.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

import ray

from actors.cluster_store import head_node_id
from actors.eval_dispatch import GameTasks, alive_nodes
from actors.naming import CLUSTER_STORE, NAMESPACE, TOURNAMENT_ACTOR, election_name, lookup, pinned, root_cause
from orchestrator.errors import BadRequest, Conflict, NotFound, Unavailable
from orchestrator.learn.registry import REGISTRY_KIND
from orchestrator.play.agents import InvalidAgent, parse_agent
from orchestrator.play.eval_placement import batch_plan
from orchestrator.play.evaluation import EvalGame, check_two_player, default_opening_plies
from orchestrator.play.evaluation_runs import (CANCELLED, CREATED, FAILED, FINISHED, RUNNING, ABTest, Gauntlet, Tournament,
                                               game_record, ratings)
from orchestrator.play.games import GameCatalog, UnknownGame
from orchestrator.stats.bradley_terry import UnknownAnchor

log = logging.getLogger(__name__)
GAMES_KIND, TOURNAMENTS_KIND, ABTESTS_KIND = "eval_games", "tournaments", "abtests"
GAUNTLETS_KIND, HISTORY_KIND = "gauntlets", "elo_history"
TICK_S = 0.2
CALL_TIMEOUT_S = 10.0
MAX_ERRORS = 5
RETRY_AFTER_S = 2.0  # a failed batch's games wait this long before they are handed out again
ABTEST_DEFAULTS = {"alpha": 0.05, "beta": 0.05, "elo_model": "logistic"}
MAX_FAILURES_IN_A_ROW = 8  # then the run fails: an agent that cannot play must not spin forever


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=16)
class TournamentActor:
    def __init__(self, games: GameCatalog) -> None:
        self.catalog = games
        self.lock = threading.RLock()
        self.games: dict[str, dict[str, Any]] = {}  # stored game records by id
        self.unsaved: dict[str, dict[str, Any]] = {}  # played, not yet accepted by the store
        self.tournaments: dict[str, Tournament] = {}
        self.abtests: dict[str, ABTest] = {}
        self.gauntlets: dict[str, Gauntlet] = {}
        self.dirty: dict[tuple[str, str], dict[str, Any]] = {}  # run records waiting for the store
        self.tasks = GameTasks(games)
        self.next_pair: dict[str, int] = {}
        self.errors: dict[str, list[str]] = {}
        self.failures: dict[str, int] = {}  # run id -> failed batches since its last success
        self.retry_at: dict[str, float] = {}  # game id -> when it may be handed out again
        self.loaded = threading.Event()
        threading.Thread(target=self._drive, name="tournament-driver", daemon=True).start()

    # --- driver ---------------------------------------------------------------------------------
    def _drive(self) -> None:
        while True:
            try:
                if not self.loaded.is_set():
                    self._load()
                with self.lock:
                    self._flush()
                    self._settle(time.time())
                    self._dispatch()
                    refs = self.tasks.refs()
                if refs:
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=TICK_S)
                    for ref in ready:
                        self._collect(ref)
                else:
                    time.sleep(TICK_S)
            except Exception:  # one bad round must not end every run
                log.exception("tournament driver round failed")
                time.sleep(TICK_S)

    def _load(self) -> None:
        store = lookup(CLUSTER_STORE)
        kinds = (GAMES_KIND, TOURNAMENTS_KIND, ABTESTS_KIND, GAUNTLETS_KIND)
        games, tournaments, abtests, gauntlets = ray.get([store.list.remote(k) for k in kinds], timeout=CALL_TIMEOUT_S)
        with self.lock:
            self.games.update(games)
            self.tournaments.update({k: Tournament.from_doc(d) for k, d in tournaments.items()})
            self.abtests.update({k: ABTest.from_doc(d) for k, d in abtests.items()})
            self.gauntlets.update({k: Gauntlet.from_doc(d) for k, d in gauntlets.items()})
            for test in self.abtests.values():
                prefix = f"{test.test_id}-p"
                seen = [int(g[len(prefix):].rsplit("-", 1)[0]) for g in self.games if g.startswith(prefix)]
                self.next_pair[test.test_id] = max(seen, default=-1) + 1
        self.loaded.set()

    def _flush(self) -> None:
        for game_id, record in list(self.unsaved.items()):
            if game_id in self.games:
                del self.unsaved[game_id]
                continue
            stored = self._write(GAMES_KIND, game_id, record, once=True)
            if stored is None:
                return
            del self.unsaved[game_id]
            self.games[game_id] = stored["doc"]
        for (kind, key), doc in list(self.dirty.items()):
            if self._write(kind, key, doc):
                del self.dirty[kind, key]

    def _settle(self, now: float) -> None:
        for tid, t in list(self.tournaments.items()):
            if t.state == RUNNING and sum(1 for g in t.schedule() if g.game_id in self.games) == t.total:
                self._snapshot(t.board_type, tid, t.kind, now)  # first: a finished run's ratings are in the history
                self._save_tournament(replace(t, state=FINISHED, finished_at=now))
        for test_id, test in list(self.abtests.items()):
            settled = test.settle(self.games, now) if test.state == RUNNING else test
            if settled is not test:
                self._save_abtest(settled)
                self.tasks.stop(test_id)
        for gid, g in list(self.gauntlets.items()):
            if g.state != RUNNING:
                continue
            verdict = Gauntlet.verdict([(self.abtests[t].state, self._decision(t)) for t in g.test_ids])
            if verdict is not None:
                for test_id in g.test_ids:
                    if self.abtests[test_id].state in (CREATED, RUNNING):
                        self._save_abtest(replace(self.abtests[test_id], state=CANCELLED, finished_at=now))
                        self.tasks.stop(test_id)
                self._snapshot(g.board_type, gid, "gauntlet", now)
                self._save(GAUNTLETS_KIND, gid, replace(g, state=FINISHED, finished_at=now))

    def _decision(self, test_id: str) -> str | None:
        return self.abtests[test_id].status(self.games)["decision"]

    def _dispatch(self) -> None:
        if self.dirty or self.unsaved:
            return  # nothing new is handed out while the store refuses what we have
        nodes = alive_nodes()
        capacity = sum(cpus for _, cpus, _ in nodes)
        for t in self.tournaments.values():
            if t.state != RUNNING:
                continue
            now = time.time()
            waiting = [g for g in t.schedule() if g.game_id not in self.games and g.game_id not in self.tasks.flying
                       and self.retry_at.get(g.game_id, 0.0) <= now]
            while waiting and len(self.tasks) < capacity:
                node = self.tasks.next_node(nodes)
                batch = [waiting.pop(0)]
                pairing = {batch[0].first, batch[0].second}
                plan = batch_plan(pairing, node[2] if node else 0)
                while waiting and len(batch) < plan.games and {waiting[0].first, waiting[0].second} == pairing:
                    batch.append(waiting.pop(0))
                self.tasks.launch(t.tournament_id, t.board_type, batch, node, plan, hard=t.kind == "nodes")
        for test in self.abtests.values():
            if test.state != RUNNING:
                continue
            _, _, counted = test.counts(self.games)
            flying = self.tasks.games_of(test.test_id)
            while len(self.tasks) < capacity:
                node = self.tasks.next_node(nodes)
                plan = batch_plan((test.agent_a, test.agent_b), node[2] if node else 0)
                pairs = min(plan.games // 2, (test.max_games - counted - flying + 1) // 2)
                if pairs <= 0:
                    break
                index = self.next_pair.get(test.test_id, 0)
                self.next_pair[test.test_id] = index + pairs
                batch = [g for k in range(index, index + pairs) for g in test.pair(k)]
                self.tasks.launch(test.test_id, test.board_type, batch, node, plan, hard=False)
                flying += len(batch)

    def _collect(self, ref: Any) -> None:
        with self.lock:
            run_id, ids, node = self.tasks.take(ref)
        try:
            answer = ray.get(ref)
        except (ray.exceptions.TaskCancelledError, ray.exceptions.RayError) as exc:
            if not isinstance(exc, ray.exceptions.TaskCancelledError):
                self._failed(run_id, ids, root_cause(exc))
            return
        now = time.time()
        with self.lock:
            self.failures[run_id] = 0
            source, board_type = self._source(run_id)
            for p in answer["played"]:
                if p["game_id"] not in self.games:
                    self.unsaved[p["game_id"]] = game_record(p["game_id"], p["first"], p["second"], board_type,
                                                             p["score_first"], source, run_id, now, answer["node"],
                                                             p["moves"])
            self.tasks.played(run_id, node, len(answer["played"]), bool(answer["gpu_ids"]))
            self._flush()

    def _failed(self, run_id: str, ids: list[str], cause: BaseException) -> None:
        message = f"{ids[0]}: {type(cause).__name__}: {(str(cause).splitlines() or [''])[0][:200]}"
        with self.lock:
            self.errors[run_id] = [*self.errors.get(run_id, []), message][-MAX_ERRORS:]
            self.retry_at.update({game_id: time.time() + RETRY_AFTER_S for game_id in ids})
            self.failures[run_id] = self.failures.get(run_id, 0) + 1
            if self.failures[run_id] < MAX_FAILURES_IN_A_ROW:
                return
            now = time.time()
            if run_id in self.tournaments and self.tournaments[run_id].state == RUNNING:
                self._save_tournament(replace(self.tournaments[run_id], state=FAILED, finished_at=now))
            elif run_id in self.abtests and self.abtests[run_id].state == RUNNING:
                self._save_abtest(replace(self.abtests[run_id], state=FAILED, finished_at=now))
            self.tasks.stop(run_id)

    def _source(self, run_id: str) -> tuple[str, str]:
        if run_id in self.tournaments:
            return "tournament", self.tournaments[run_id].board_type
        test = self.abtests[run_id]
        return test.source, test.board_type

    # --- persistence ------------------------------------------------------------------------------
    def _write(self, kind: str, key: str, doc: dict[str, Any], once: bool = False) -> dict[str, Any] | None:
        """The store's answer, or None while no leader accepts writes. `once`: the first record written
        under the key is kept and answered (`created`, `doc`), whichever incarnation or caller wrote it."""
        try:
            _, leader = ray.get(lookup(CLUSTER_STORE).highest_epoch.remote(), timeout=CALL_TIMEOUT_S)
            if leader is None:
                return None
            return ray.get(lookup(election_name(leader)).leader_write.remote(kind, key, doc, once=once),
                           timeout=CALL_TIMEOUT_S)
        except Exception as exc:  # no leader, a deposed one, or the store restarting: try again next tick
            log.info("write of %s/%s deferred: %s", kind, key, root_cause(exc))
            return None

    def _save(self, kind: str, key: str, run: Any) -> None:
        {TOURNAMENTS_KIND: self.tournaments, ABTESTS_KIND: self.abtests, GAUNTLETS_KIND: self.gauntlets}[kind][key] = run
        self.dirty[kind, key] = run.to_doc()
        if self._write(kind, key, self.dirty[kind, key]):
            del self.dirty[kind, key]

    def _save_tournament(self, t: Tournament) -> None:
        self._save(TOURNAMENTS_KIND, t.tournament_id, t)

    def _save_abtest(self, test: ABTest) -> None:
        self._save(ABTESTS_KIND, test.test_id, test)

    def _create(self, kind: str, key: str, run: Any) -> None:
        """A new run is saved before it is acknowledged: refused by the store, it does not exist."""
        if not self._write(kind, key, run.to_doc()):
            raise Unavailable(f"{key} not saved: no leader accepts writes now")
        {TOURNAMENTS_KIND: self.tournaments, ABTESTS_KIND: self.abtests, GAUNTLETS_KIND: self.gauntlets}[kind][key] = run

    def _snapshot(self, board_type: str, event_id: str, event_kind: str, now: float) -> None:
        table = ratings(self.games.values(), board_type)
        doc = {"event_id": event_id, "event_kind": event_kind, "at": now, **table}
        if not self._write(HISTORY_KIND, event_id, doc):
            self.dirty[HISTORY_KIND, event_id] = doc

    # --- checks -------------------------------------------------------------------------------------
    def _ready(self) -> None:
        if not self.loaded.wait(3 * CALL_TIMEOUT_S):
            raise Unavailable("evaluation records are still loading from the cluster store")

    def _check_epoch(self, epoch: int) -> None:
        highest, leader = ray.get(lookup(CLUSTER_STORE).highest_epoch.remote(), timeout=CALL_TIMEOUT_S)
        if epoch < highest:
            raise Conflict(f"stale epoch {epoch}: epoch {highest} belongs to {leader}", epoch=highest, leader_id=leader)

    def _opening_plies(self, board_type: str, asked: int | None) -> int:
        if asked is not None:
            return asked
        try:
            return default_opening_plies(self.catalog.load(board_type))
        except UnknownGame as exc:
            raise BadRequest(f"board_type: {exc}", field="board_type") from None

    def _check_agents(self, board_type: str, agents: list[str], field: str) -> None:
        """Names parse, the game is a two-player one, and every model named is registered; building the
        agents is left to the tasks (it imports the search and network code, which takes seconds)."""
        try:
            check_two_player(self.catalog.load(board_type))
        except (UnknownGame, ValueError) as exc:
            raise BadRequest(f"board_type: {exc}", field="board_type") from None
        try:
            specs = [parse_agent(name) for name in agents]
        except InvalidAgent as exc:
            raise BadRequest(f"{field}: {exc}", field=field) from None
        store = lookup(CLUSTER_STORE)
        for model_id in {s.model_id or s.params_id for s in specs} - {None}:
            if ray.get(store.read.remote(REGISTRY_KIND, model_id), timeout=CALL_TIMEOUT_S) is None:
                raise BadRequest(f"{field}: model {model_id!r} is not in the model registry", field=field)

    # --- tournaments ------------------------------------------------------------------------------------
    def start_tournament(self, spec: dict[str, Any], epoch: int) -> dict[str, Any]:
        self._ready()
        self._check_epoch(epoch)
        agents = list(spec["agents"])
        if len(set(agents)) != len(agents) or len(agents) < 2:
            raise BadRequest("agents: at least two distinct agents", field="agents")
        tid = spec.get("tournament_id") or f"tour-{uuid.uuid4().hex[:12]}"
        plies = self._opening_plies(spec["board_type"], spec.get("opening_plies"))
        with self.lock:
            nodes = tuple(n for n, _, _ in alive_nodes()) if spec["kind"] == "nodes" else ()
            if spec["kind"] == "quick_eval":
                t = Tournament.candidate_against(tid, spec["board_type"], agents[0], agents[1:],
                                                 spec["games_per_pairing"], plies, time.time())
            else:
                t = Tournament.round_robin(tid, spec["board_type"], agents, spec["games_per_pairing"], plies,
                                           spec["kind"], time.time(), nodes)
            existing = self.tournaments.get(tid)
            if existing is not None:
                same = (existing.agents, existing.board_type, existing.games_per_pairing, existing.kind) == \
                       (t.agents, t.board_type, t.games_per_pairing, t.kind)
                if not same:
                    raise Conflict(f"tournament {tid!r} exists with a different body", tournament_id=tid)
                return {"created": False, **self._tournament_view(existing)}
            self._check_agents(t.board_type, agents, "agents")
            self._create(TOURNAMENTS_KIND, tid, t)
            return {"created": True, **self._tournament_view(t)}

    def _tournament(self, tid: str) -> Tournament:
        if tid not in self.tournaments:
            raise NotFound(f"unknown tournament {tid!r}", tournament_id=tid)
        return self.tournaments[tid]

    def _tournament_view(self, t: Tournament) -> dict[str, Any]:
        ids = {g.game_id for g in t.schedule()}
        records = [r for gid, r in self.games.items() if gid in ids]
        view = t.status(records, self.tasks.rate(t.tournament_id), time.time())
        return {**view, "in_flight": self.tasks.games_of(t.tournament_id),
                "nodes": self.tasks.per_node(t.tournament_id),
                "errors": self.errors.get(t.tournament_id, []), "saved": not self.unsaved and not self.dirty}

    def tournament_status(self, tid: str | None = None) -> dict[str, Any]:
        self._ready()
        with self.lock:
            if tid is not None:
                return self._tournament_view(self._tournament(tid))
            views = [self._tournament_view(t) for t in self.tournaments.values()]
            return {"tournaments": sorted(views, key=lambda v: v["created_at"])}

    def cancel_tournament(self, tid: str, epoch: int) -> dict[str, Any]:
        self._ready()
        self._check_epoch(epoch)
        with self.lock:
            t = self._tournament(tid)
            if t.state == RUNNING:
                self._save_tournament(replace(t, state=CANCELLED, finished_at=time.time()))
                self.tasks.stop(tid)
            return self._tournament_view(self.tournaments[tid])

    def submit_results(self, tid: str, results: list[dict[str, Any]]) -> dict[str, Any]:
        """A worker's results for scheduled games of a tournament; games stored already are ignored."""
        self._ready()
        with self.lock:
            t = self._tournament(tid)
            schedule = {g.game_id: g for g in t.schedule()}
            accepted = ignored = 0
            for k, r in enumerate(results):
                game = schedule.get(r["game_id"])
                if game is None:
                    raise BadRequest(f"results.{k}.game_id: {r['game_id']!r} is not a game of {tid}",
                                     field=f"results.{k}.game_id")
                if r["game_id"] in self.games or r["game_id"] in self.unsaved:
                    ignored += 1
                    continue
                self.unsaved[r["game_id"]] = game_record(game.game_id, game.first, game.second, t.board_type,
                                                         r["result"], "reported", tid, time.time())
                accepted += 1
            self._flush()
            return {"accepted": accepted, "ignored": ignored, "saved": not self.unsaved}

    def report_match(self, match: dict[str, Any]) -> dict[str, Any]:
        """One external result, stored once under its match_id (the store keeps the first record of a key,
        even against an old incarnation of this actor); a repeat is ignored, another body is a 409."""
        self._ready()
        match_id = match["match_id"]
        with self.lock:
            stored = self.games.get(match_id) or self.unsaved.get(match_id)
            created = False
            if stored is None:
                record = game_record(match_id, match["agent_a"], match["agent_b"], match["board_type"],
                                     match["result"], "reported", None, time.time())
                answer = self._write(GAMES_KIND, match_id, record, once=True)
                if answer is None:
                    raise Unavailable("result not saved: no leader accepts writes now")
                stored, created = answer["doc"], answer["created"]
                self.games[match_id] = stored
        keys = ("agent_a", "agent_b", "board_type", "result")
        if any(stored[k] != match[k] for k in keys):
            raise Conflict(f"match {match_id!r} is stored with another body: "
                           + ", ".join(f"{k}={stored[k]!r}" for k in keys), match_id=match_id)
        return {"created": created, "game": stored}

    def play_match(self, agent_a: str, agent_b: str, board_type: str, seed: int, timeout_s: float) -> dict[str, Any]:
        self._ready()
        self._check_agents(board_type, [agent_a, agent_b], "agent_a")
        game = EvalGame(f"match-{uuid.uuid4().hex[:12]}", agent_a, agent_b, seed)
        ref = self.tasks.play_now(board_type, game)
        try:
            answer = ray.get(ref, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            raise Unavailable(f"the game did not finish within {timeout_s}s") from None
        p = answer["played"][0]
        record = game_record(p["game_id"], agent_a, agent_b, board_type, p["score_first"], "match", None, time.time(),
                             answer["node"], p["moves"])
        with self.lock:
            saved = self._write(GAMES_KIND, p["game_id"], record, once=True) is not None
            if saved:
                self.games[p["game_id"]] = record
            else:
                self.unsaved[p["game_id"]] = record
        return {**record, "saved": saved, "gpu_ids": answer["gpu_ids"]}

    # --- ratings ----------------------------------------------------------------------------------------
    def ratings(self, board_type: str, anchor: str | None = None) -> dict[str, Any]:
        self._ready()
        with self.lock:
            records = list(self.games.values())
        try:
            return ratings(records, board_type, anchor)
        except UnknownAnchor as exc:
            raise NotFound(str(exc), anchor=anchor) from None

    def history(self, agent: str | None, board_type: str | None) -> list[dict[str, Any]]:
        snapshots = ray.get(lookup(CLUSTER_STORE).list.remote(HISTORY_KIND), timeout=CALL_TIMEOUT_S)
        points = []
        for snap in sorted(snapshots.values(), key=lambda s: s["at"]):
            if board_type is not None and snap["board_type"] != board_type:
                continue
            for row in snap["rows"]:
                if agent is None or row["agent"] == agent:
                    points.append({"event_id": snap["event_id"], "event_kind": snap["event_kind"], "at": snap["at"],
                                   "board_type": snap["board_type"], "anchor": snap["anchor"], **row})
        return points

    # --- A/B tests --------------------------------------------------------------------------------------
    def create_abtest(self, spec: dict[str, Any], epoch: int, source: str = "abtest") -> dict[str, Any]:
        self._ready()
        self._check_epoch(epoch)
        test_id = spec.get("test_id") or f"ab-{uuid.uuid4().hex[:12]}"
        fields = {k: spec[k] for k in ("agent_a", "agent_b", "board_type", "elo0", "elo1", "max_games")}
        fields.update({k: spec.get(k, default) for k, default in ABTEST_DEFAULTS.items()})
        fields["opening_plies"] = self._opening_plies(spec["board_type"], spec.get("opening_plies"))
        test = ABTest(test_id=test_id, created_at=time.time(), source=source, **fields)
        try:
            test.params
        except ValueError as exc:
            raise BadRequest(str(exc), field="elo1" if "elo" in str(exc) else "alpha") from None
        with self.lock:
            existing = self.abtests.get(test_id)
            if existing is not None:
                if existing.spec() != test.spec():
                    raise Conflict(f"A/B test {test_id!r} exists with a different body", test_id=test_id)
                return {"created": False, **existing.status(self.games)}
            if test.agent_a == test.agent_b:
                raise BadRequest("agent_b: must differ from agent_a", field="agent_b")
            self._check_agents(test.board_type, [test.agent_a, test.agent_b], "agent_a")
            self._create(ABTESTS_KIND, test_id, test)
            return {"created": True, **test.status(self.games)}

    def _abtest(self, test_id: str) -> ABTest:
        if test_id not in self.abtests:
            raise NotFound(f"unknown A/B test {test_id!r}", test_id=test_id)
        return self.abtests[test_id]

    def run_abtest(self, test_id: str, epoch: int) -> dict[str, Any]:
        self._ready()
        self._check_epoch(epoch)
        with self.lock:
            test = self._abtest(test_id)
            if test.state == CREATED:
                self._save_abtest(replace(test, state=RUNNING))
            return self.abtest_status(test_id)

    def abtest_status(self, test_id: str) -> dict[str, Any]:
        self._ready()
        with self.lock:
            test = self._abtest(test_id)
            return {**test.status(self.games), "in_flight": self.tasks.games_of(test_id),
                    "games_per_s": self.tasks.rate(test_id),
                    "errors": self.errors.get(test_id, [])}

    def list_abtests(self) -> list[dict[str, Any]]:
        self._ready()
        with self.lock:
            return sorted((t.status(self.games) for t in self.abtests.values()), key=lambda s: s["created_at"])

    def cancel_abtest(self, test_id: str, epoch: int) -> dict[str, Any]:
        self._ready()
        self._check_epoch(epoch)
        with self.lock:
            test = self._abtest(test_id)
            if test.state in (CREATED, RUNNING):
                self._save_abtest(replace(test, state=CANCELLED, finished_at=time.time()))
                self.tasks.stop(test_id)
            return self.abtest_status(test_id)

    def add_abtest_results(self, test_id: str, wdl: list[int] | None, penta: list[int] | None,
                           submission_id: str | None) -> dict[str, Any]:
        self._ready()
        with self.lock:
            test = self._abtest(test_id)
            if test.state in (FINISHED, CANCELLED):
                raise Conflict(f"A/B test {test_id!r} is {test.state} and takes no more results", test_id=test_id)
            has_pairs = any(test.counts(self.games)[1]) or any(test.submitted_pentanomial)
            if wdl is not None and has_pairs or penta is not None and any(test.submitted_wdl):
                raise Conflict("an A/B test counts single games or game pairs, not both", test_id=test_id)
            updated = test.add_results(tuple(wdl) if wdl else None, tuple(penta) if penta else None, submission_id)
            if updated is not test:
                self._save_abtest(updated.settle(self.games, time.time()))
                if self.dirty:
                    raise Unavailable("results not saved: no leader accepts writes now")
            return self.abtest_status(test_id)

    # --- gauntlets --------------------------------------------------------------------------------------
    def execute_gauntlet(self, spec: dict[str, Any], epoch: int) -> dict[str, Any]:
        self._ready()
        self._check_epoch(epoch)
        gid = spec.get("gauntlet_id") or f"gauntlet-{uuid.uuid4().hex[:12]}"
        baselines = list(spec["baselines"])
        if not baselines or spec["candidate"] in baselines or len(set(baselines)) != len(baselines):
            raise BadRequest("baselines: one or more distinct agents, not the candidate", field="baselines")
        with self.lock:
            existing = self.gauntlets.get(gid)
            if existing is not None:
                if (existing.candidate, existing.baselines, existing.board_type) != \
                        (spec["candidate"], tuple(baselines), spec["board_type"]):
                    raise Conflict(f"gauntlet {gid!r} exists with a different body", gauntlet_id=gid)
                return {"created": False, **self.gauntlet_status(gid)}
            self._check_agents(spec["board_type"], [spec["candidate"], *baselines], "candidate")
            test_ids = tuple(Gauntlet.test_id(gid, k) for k in range(len(baselines)))
            for test_id, baseline in zip(test_ids, baselines):
                test_spec = {**spec, "test_id": test_id, "agent_a": spec["candidate"], "agent_b": baseline}
                self.create_abtest(test_spec, epoch, source="gauntlet")
                self.run_abtest(test_id, epoch)
            gauntlet = Gauntlet(gid, spec["candidate"], tuple(baselines), spec["board_type"], test_ids, time.time())
            self._create(GAUNTLETS_KIND, gid, gauntlet)
            return {"created": True, **self.gauntlet_status(gid)}

    def gauntlet_status(self, gid: str | None = None) -> dict[str, Any]:
        self._ready()
        with self.lock:
            if gid is None:
                return {"gauntlets": [self.gauntlet_status(g) for g in sorted(self.gauntlets)]}
            if gid not in self.gauntlets:
                raise NotFound(f"unknown gauntlet {gid!r}", gauntlet_id=gid)
            g = self.gauntlets[gid]
            tests = [self.abtest_status(t) for t in g.test_ids]
            verdict = Gauntlet.verdict([(t["state"], t["decision"]) for t in tests])
            return {"gauntlet_id": gid, "candidate": g.candidate, "baselines": list(g.baselines),
                    "board_type": g.board_type, "state": g.state, "verdict": verdict, "created_at": g.created_at,
                    "finished_at": g.finished_at, "tests": tests,
                    "done": sum(t["games"] for t in tests), "total": sum(t["max_games"] for t in tests)}


def ensure_tournament_actor(games: GameCatalog) -> Any:
    """Get or create the singleton on the head (its state is in the cluster store, not on a disk)."""
    return TournamentActor.options(name=TOURNAMENT_ACTOR, namespace=NAMESPACE, lifetime="detached",
                                   get_if_exists=True, scheduling_strategy=pinned(head_node_id())).remote(games)
