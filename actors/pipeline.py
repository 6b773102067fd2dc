"""PipelineActor: drives improvement runs, continuous pipelines and rollback checks for the leader.

One detached singleton pinned to the Ray head (beside the ClusterStore, so it adds no failure
domain). A driver thread advances every running run once per `TICK_S`: it gathers what the pure
state machine (`orchestrator.learn.pipeline`) needs (the run's jobs from the home node's
JobSupervisor, its A/B tests from the TournamentActor, the board's ledger from the store), stores
the advanced run, and only then carries out the actions, each idempotent by its id.

Leadership: every write goes through the ElectionActor of the node holding the newest term in
the store (`leader_write`, fenced by its epoch), and every command to a node or to the
TournamentActor carries that epoch. While no node leads, writes are refused, so nothing is acted
on; when a new leader begins its term the next tick carries on from the stored runs under the new
epoch. What survives a failure: runs (kind `improvement_runs`), ledgers (`best_models`) and
rollback checks (`rollback_checks`) are in the cluster store; this actor keeps nothing else. Ray
restarts it after a crash and it reloads them.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import ray

from actors.cluster_store import head_node_id
from actors.sync import push_best_model
from actors.naming import (CLUSTER_STORE, NAMESPACE, TOURNAMENT_ACTOR, election_name, jobs_name, lookup, peer_name,
                           pinned, root_cause)
from orchestrator import __version__
from orchestrator.errors import BadRequest, Conflict, NotFound, Unavailable
from orchestrator.learn import gating
from orchestrator.learn import pipeline as pl
from orchestrator.learn import trends
from orchestrator.learn.model_records import TRANSITIONS, DataWindow, ModelRecord, game_ids_digest
from orchestrator.learn.registry import REGISTRY_KIND
from orchestrator.play.games import GameCatalog

log = logging.getLogger(__name__)
PIPELINE_ACTOR = "pipeline"
CHECKS_KIND = "rollback_checks"
TICK_S = 1.0
CALL_TIMEOUT_S = 10.0
MAX_ERRORS = 5


@ray.remote(num_cpus=0, max_retries=0)
def write_untrained(board_type: str, games: GameCatalog, data_dir: str, model_id: str, blocks: int | None,
                    channels: int | None, seed: int) -> dict[str, Any]:
    """On the home node: the untrained network a parentless training run with `seed` starts from,
    saved (atomically, verified) under `data_dir`; returns its model record."""
    import torch

    from orchestrator.nn.checkpoint import load_checkpoint, model_path, save_checkpoint
    from orchestrator.nn.resnet import PolicyValueNet, ResNetConfig

    torch.manual_seed(seed)  # exactly as orchestrator.learn.jobs.run_training seeds a fresh network
    model = PolicyValueNet(ResNetConfig.for_game(games.spec(board_type), blocks, channels))
    path = model_path(data_dir, model_id)
    sha256 = save_checkpoint(path, model, code_version=__version__, extra={"untrained_seed": seed})
    load_checkpoint(path, sha256)
    record = ModelRecord(model_id=model_id, board_type=board_type, kind="policy_value", parent=None,
                         created_at=time.time(), data_window=DataWindow(files=(), game_count=0,
                                                                        game_ids_digest=game_ids_digest(())),
                         training_config={"seed": seed, "blocks": blocks, "channels": channels, "steps": 0},
                         metrics={"untrained": True}, code_version=__version__,
                         path=path.relative_to(data_dir).as_posix(), sha256=sha256)
    return record.to_dict()


def _call(ref: Any) -> Any:
    try:
        return ray.get(ref, timeout=CALL_TIMEOUT_S)
    except ray.exceptions.RayTaskError as exc:
        raise root_cause(exc) from None


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=16)
class PipelineActor:
    def __init__(self, games: GameCatalog, tick_s: float = TICK_S) -> None:
        self.games = games
        self.tick_s = tick_s
        self.lock = threading.RLock()
        self.runs: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, list[str]] = {}
        self.loaded = threading.Event()
        threading.Thread(target=self._drive, name="pipeline-driver", daemon=True).start()

    # --- the driver -------------------------------------------------------------------------------
    def _drive(self) -> None:
        while True:
            try:
                if not self.loaded.is_set():
                    self._load()
                self._tick()
            except Exception:  # one bad round must not stop every run
                log.exception("pipeline driver round failed")
            time.sleep(self.tick_s)

    def _load(self) -> None:
        store = lookup(CLUSTER_STORE)
        runs = _call(store.list.remote(pl.RUNS_KIND))
        checks = _call(store.list.remote(CHECKS_KIND))
        with self.lock:
            self.runs.update({k: v for k, v in runs.items() if k not in self.runs})
            self.checks.update({k: v for k, v in checks.items() if k not in self.checks})
        self.loaded.set()

    def _tick(self) -> None:
        epoch, leader = _call(lookup(CLUSTER_STORE).highest_epoch.remote())
        if leader is None:
            return
        with self.lock:
            running = [run_id for run_id, run in self.runs.items() if run["state"] == "running"]
            checks = [cid for cid, check in self.checks.items() if check["state"] == "running"]
        for run_id in running:
            try:
                self._advance(run_id, epoch, leader)
            except Exception as exc:  # the next tick tries again; the error is shown in the status
                self._note(run_id, exc)
        for check_id in checks:
            try:
                self._advance_check(check_id, epoch)
            except Exception as exc:
                self._note(check_id, exc)

    def _note(self, key: str, exc: BaseException) -> None:
        cause = root_cause(exc)
        message = f"{time.strftime('%H:%M:%S')} {type(cause).__name__}: {str(cause).splitlines()[0][:300] if str(cause) else ''}"
        with self.lock:
            self.errors[key] = [*self.errors.get(key, []), message][-MAX_ERRORS:]

    def _advance(self, run_id: str, epoch: int, leader: str) -> None:
        with self.lock:
            run = self.runs[run_id]
        world = pl.World(ledger=self._ledger(run["request"]["board_type"]), epoch=epoch, leader_id=leader,
                         jobs={job_id: self._job(run["node_id"], job_id) for job_id in pl.job_ids(run)},
                         tests={test_id: self._test(test_id) for test_id in pl.test_ids(run)},
                         models={model_id: _call(lookup(CLUSTER_STORE).read.remote(REGISTRY_KIND, model_id))
                                 for model_id in pl.model_ids(run)})
        advanced, actions = pl.advance(run, world, time.time())
        if advanced != run:
            self._save_run(advanced)  # stored before acting: a crash after this repeats the same actions
        for action in actions:
            try:
                self._act(advanced, action, epoch)
            except BadRequest as refused:  # refused for good (e.g. agents that cannot play): stop, say why
                failed, stops = pl.cancel(advanced, time.time(), "failed",
                                          f"{type(action).__name__} refused: {refused.message}")
                self._save_run(failed)
                for stop in stops:
                    self._act(failed, stop, epoch)
                return

    # --- what the world looks like ----------------------------------------------------------------
    def _ledger(self, board_type: str) -> dict[str, Any]:
        return _call(lookup(CLUSTER_STORE).read.remote(gating.LEDGER_KIND, board_type)) or gating.empty_ledger(board_type)

    def _job(self, node_id: str, job_id: str) -> Any:
        try:
            return _call(lookup(jobs_name(node_id)).get.remote(job_id))
        except NotFound:
            return None
        except Exception:  # the node is gone or its supervisor restarting
            return pl.UNREACHABLE

    def _test(self, test_id: str) -> dict[str, Any] | None:
        try:
            return _call(lookup(TOURNAMENT_ACTOR).abtest_status.remote(test_id))
        except NotFound:
            return None

    # --- doing things -----------------------------------------------------------------------------
    def _act(self, run: dict[str, Any], action: pl.Action, epoch: int) -> None:
        node_id = run["node_id"]
        if isinstance(action, pl.StartJob):
            _call(lookup(election_name(node_id)).check_command_epoch.remote(action.epoch))
            _call(lookup(jobs_name(node_id)).start.remote(action.job_id, action.job_type, action.config))
        elif isinstance(action, pl.StopJob):
            try:
                _call(lookup(jobs_name(node_id)).stop.remote(action.job_id))
            except (NotFound, Conflict):
                pass  # never started, or already finished
        elif isinstance(action, pl.StartTest):
            self._start_test(action.spec, epoch)
        elif isinstance(action, pl.StopTest):
            try:
                _call(lookup(TOURNAMENT_ACTOR).cancel_abtest.remote(action.test_id, epoch))
            except NotFound:
                pass  # never created
        elif isinstance(action, pl.RegisterModel):
            if _call(lookup(CLUSTER_STORE).read.remote(REGISTRY_KIND, action.model_id)) is None:
                self._leader_write(REGISTRY_KIND, action.model_id, ModelRecord.from_dict(action.doc).to_dict())
        elif isinstance(action, pl.InitBaseline):
            self._init_baseline(node_id, action)
        elif isinstance(action, pl.LedgerEvent):
            self._ledger_event(run["request"]["board_type"], action)
        elif isinstance(action, pl.Archive):
            self._set_status(action.model_id, "archived")

    def _start_test(self, spec: dict[str, Any], epoch: int) -> None:
        tournament = lookup(TOURNAMENT_ACTOR)
        _call(tournament.create_abtest.remote(spec, epoch, "gating"))
        _call(tournament.run_abtest.remote(spec["test_id"], epoch))

    def _init_baseline(self, node_id: str, action: pl.InitBaseline) -> None:
        store = lookup(CLUSTER_STORE)
        doc = _call(store.read.remote(REGISTRY_KIND, action.model_id))
        if doc is None:
            ray_node = next(p["ray_node_id"] for p in _call(lookup(peer_name(node_id)).snapshot.remote())["peers"]
                            if p["is_self"])
            doc = ray.get(write_untrained.options(scheduling_strategy=pinned(ray_node)).remote(
                action.board_type, self.games, action.data_dir, action.model_id, action.blocks, action.channels,
                action.seed), timeout=120)
            self._leader_write(REGISTRY_KIND, action.model_id, doc)
        ledger = self._ledger(action.board_type)
        if ledger["best"] is None:
            ledger = gating.initial_best(ledger, action.event_id, action.model_id, time.time(),
                                         "the board's first best: the untrained network the first candidate is "
                                         "trained from (nothing to test it against)")
            self._leader_write(gating.LEDGER_KIND, action.board_type, ledger)
        self._sync_statuses(ledger)

    def _ledger_event(self, board_type: str, action: pl.LedgerEvent) -> dict[str, Any]:
        ledger = self._ledger(board_type)
        now = time.time()
        if action.kind == "promote":
            ledger = gating.promote(ledger, action.event_id, action.model_id, now, action.reason, action.evidence)
        elif action.kind == "check":
            ledger = gating.record_check(ledger, action.event_id, action.model_id, now, action.reason, action.evidence)
        else:
            ledger = gating.rollback(ledger, action.event_id, action.model_id, now, action.reason, action.evidence)
        self._leader_write(gating.LEDGER_KIND, board_type, ledger)
        self._sync_statuses(ledger)
        if action.kind != "check" and ledger["best"] is not None:  # the new best's file goes to every node first
            push_best_model(ledger["best"])
        return ledger

    def _sync_statuses(self, ledger: dict[str, Any]) -> None:
        for model_id, status in gating.desired_statuses(ledger).items():
            self._set_status(model_id, status)

    def _set_status(self, model_id: str, status: str) -> None:
        doc = _call(lookup(CLUSTER_STORE).read.remote(REGISTRY_KIND, model_id))
        if doc is None or doc.get("status") == status:
            return
        record = ModelRecord.from_dict(doc)
        for step in gating.status_path(record.status, status, TRANSITIONS):
            record = record.transition(step)
        self._leader_write(REGISTRY_KIND, model_id, {**doc, **record.to_dict()})

    def _leader_write(self, kind: str, key: str, doc: dict[str, Any]) -> None:
        _, leader = _call(lookup(CLUSTER_STORE).highest_epoch.remote())
        if leader is None:
            raise Unavailable("no leader has begun a term")
        _call(lookup(election_name(leader)).leader_write.remote(kind, key, doc))

    def _save_run(self, run: dict[str, Any]) -> None:
        self._leader_write(pl.RUNS_KIND, run["run_id"], run)
        with self.lock:
            self.runs[run["run_id"]] = run

    # --- rollback checks (POST /rollback/auto) ---------------------------------------------------------
    def _advance_check(self, check_id: str, epoch: int) -> None:
        with self.lock:
            check = self.checks[check_id]
        status = self._test(check["spec"]["test_id"])
        if status is None:
            self._start_test(check["spec"], epoch)
            return
        proof = gating.evidence(check["spec"]["test_id"], check["spec"], status)
        if status.get("state") == "failed":  # no games could be played: nothing decided, nothing changed
            self._save_check({**check, "evidence": proof, "state": "finished", "outcome": "failed",
                              "reason": "; ".join(status.get("errors") or [])[-500:], "finished_at": time.time()})
            return
        verdict = gating.regression_verdict(status)
        if verdict.action == "wait":
            if proof != check.get("evidence"):
                self._save_check({**check, "evidence": proof})
            return
        ledger = self._ledger(check["board_type"])
        if verdict.action == "rollback" and ledger["best"] == check["best"]:
            action = pl.LedgerEvent("rollback", f"{check_id}:rollback", check["previous"], verdict.reason, proof)
            outcome = "rolled_back"
        elif verdict.action == "rollback":
            action, outcome = None, "superseded"
        else:
            action = pl.LedgerEvent("check", f"{check_id}:passed", check["best"], verdict.reason, proof)
            outcome = "kept"
        if action is not None:
            self._ledger_event(check["board_type"], action)
        self._save_check({**check, "evidence": proof, "state": "finished", "outcome": outcome,
                          "reason": verdict.reason, "finished_at": time.time()})

    def _save_check(self, check: dict[str, Any]) -> None:
        self._leader_write(CHECKS_KIND, check["check_id"], check)
        with self.lock:
            self.checks[check["check_id"]] = check

    # --- API ----------------------------------------------------------------------------------------
    def _ready(self) -> None:
        if not self.loaded.wait(3 * CALL_TIMEOUT_S):
            raise Unavailable("pipeline state is still loading from the cluster store")

    def _check_epoch(self, epoch: int) -> None:
        highest, leader = _call(lookup(CLUSTER_STORE).highest_epoch.remote())
        if epoch < highest:
            raise Conflict(f"stale epoch {epoch}: epoch {highest} belongs to {leader}", epoch=highest, leader_id=leader)

    def start(self, mode: str, request: dict[str, Any], node_id: str, epoch: int) -> dict[str, Any]:
        self._ready()
        self._check_epoch(epoch)
        run_id = request.get("run_id") or f"{'imp' if mode == 'improvement' else 'pipe'}-{uuid.uuid4().hex[:10]}"
        request = {**request, "run_id": run_id}
        with self.lock:
            existing = self.runs.get(run_id)
            if existing is not None:
                if (existing["mode"], existing["request"]) != (mode, request):
                    raise Conflict(f"run {run_id!r} exists with a different body", run_id=run_id)
                return {"created": False, "run": pl.run_view(existing, time.time())}
            run = pl.new_run(run_id, mode, request, node_id, time.time())
            self._save_run(run)  # refused while we do not lead: then the run does not exist
        return {"created": True, "run": pl.run_view(run, time.time())}

    def _run(self, run_id: str | None, mode: str | None) -> dict[str, Any]:
        if run_id is not None:
            run = self.runs.get(run_id)
            if run is None or (mode is not None and run["mode"] != mode):
                raise NotFound(f"unknown {mode or 'improvement'} run {run_id!r}", run_id=run_id)
            return run
        runs = sorted((r for r in self.runs.values() if mode is None or r["mode"] == mode),
                      key=lambda r: (r["state"] == "running", r["created_at"]))
        if not runs:
            raise NotFound(f"no {mode or 'improvement'} run yet", run_id=None)
        return runs[-1]  # the newest running one, else the newest

    def status(self, run_id: str | None, mode: str | None) -> dict[str, Any]:
        self._ready()
        with self.lock:
            run = self._run(run_id, mode)
            view = pl.run_view(run, time.time())
            current = next((c for c in run["cycles"] if c["phase"] not in pl.TERMINAL_CYCLE), None)
            return {**view, "current": pl.cycle_view(current, time.time()) if current else None,
                    "errors": self.errors.get(run["run_id"], []),
                    "runs": [r["run_id"] for r in sorted(self.runs.values(), key=lambda r: r["created_at"])
                             if mode is None or r["mode"] == mode]}

    def cycles(self, run_id: str | None, board_type: str | None) -> list[dict[str, Any]]:
        self._ready()
        now = time.time()
        with self.lock:
            runs = [self._run(run_id, None)] if run_id else sorted(self.runs.values(), key=lambda r: r["created_at"])
            return [{"run_id": r["run_id"], "mode": r["mode"], "board_type": r["request"]["board_type"],
                     **pl.cycle_view(c, now)}
                    for r in runs if board_type is None or r["request"]["board_type"] == board_type
                    for c in r["cycles"]]

    def phase_complete(self, cycle_id: str, phase: str, result: dict[str, Any], epoch: int) -> dict[str, Any]:
        self._ready()
        self._check_epoch(epoch)
        with self.lock:
            run = next((r for r in self.runs.values() if any(c["cycle_id"] == cycle_id for c in r["cycles"])), None)
            if run is None:
                raise NotFound(f"unknown cycle {cycle_id!r}", cycle_id=cycle_id)
            model_id = result.get("model_id")
            models = {model_id: _call(lookup(CLUSTER_STORE).read.remote(REGISTRY_KIND, model_id))} \
                if isinstance(model_id, str) else {}
            updated, actions = pl.complete_phase(run, cycle_id, phase, result, models, time.time())
            changed = updated != run
            if changed:
                self._save_run(updated)
        for action in actions:
            self._act(updated, action, epoch)
        cycle = next(c for c in updated["cycles"] if c["cycle_id"] == cycle_id)
        return {"accepted": changed, "cycle": pl.cycle_view(cycle, time.time())}

    def cancel(self, run_id: str | None, mode: str | None, epoch: int) -> dict[str, Any]:
        self._ready()
        self._check_epoch(epoch)
        with self.lock:
            run = self._run(run_id, mode)
            updated, actions = pl.cancel(run, time.time())
            if updated != run:
                self._save_run(updated)
        for action in actions:
            self._act(updated, action, epoch)
        return pl.run_view(updated, time.time())

    # --- best models and rollbacks ----------------------------------------------------------------
    def ledgers(self, board_type: str | None) -> list[dict[str, Any]]:
        if board_type is not None:
            return [self._ledger(board_type)]
        return sorted(_call(lookup(CLUSTER_STORE).list.remote(gating.LEDGER_KIND)).values(),
                      key=lambda ledger: ledger["board_type"])

    def rollback_candidates(self, board_type: str) -> dict[str, Any]:
        ledger = self._ledger(board_type)
        table = _call(lookup(TOURNAMENT_ACTOR).ratings.remote(board_type))
        rows = []
        for model_id in gating.former_bests(ledger):
            ratings = [r for r in table["rows"] if r["agent"].startswith(f"model:{model_id}+")]
            last = max((e["at"] for e in ledger["events"] if e["model_id"] == model_id), default=None)
            rows.append({"model_id": model_id, "was_best_until": _until(ledger, model_id), "last_event_at": last,
                         "rolled_back": model_id in gating.rolled_back(ledger), "ratings": ratings})
        return {"board_type": board_type, "current_best": ledger["best"], "anchor": table.get("anchor"),
                "candidates": rows}

    def rollback_execute(self, board_type: str, model_id: str, reason: str, epoch: int) -> dict[str, Any]:
        self._check_epoch(epoch)
        ledger = self._ledger(board_type)
        if ledger["best"] == model_id:
            return {"changed": False, "ledger": ledger}  # a retried rollback: already done
        if model_id not in gating.former_bests(ledger):
            raise Conflict(f"model {model_id!r} was never the best of {board_type}; candidates: "
                           f"{gating.former_bests(ledger)}", model_id=model_id)
        updated = gating.rollback(ledger, f"manual:{uuid.uuid4().hex[:12]}", model_id, time.time(), reason, None,
                                  manual=True)
        self._leader_write(gating.LEDGER_KIND, board_type, updated)
        self._sync_statuses(updated)
        return {"changed": True, "ledger": updated}

    def rollback_auto(self, board_type: str, config: dict[str, Any], epoch: int) -> dict[str, Any]:
        """Start (or return) the non-regression check of the current best against the one it replaced."""
        self._ready()
        self._check_epoch(epoch)
        ledger = self._ledger(board_type)
        best, previous = ledger["best"], gating.previous_best(ledger)
        if best is None or previous is None:
            raise Conflict(f"{board_type} has no best that replaced another; nothing to check", board_type=board_type)
        settings = gating.GatingConfig.model_validate(config)
        check_id = f"check-{best}-vs-{previous}"
        with self.lock:
            existing = self.checks.get(check_id)
            if existing is not None and (existing["state"] == "running" or existing["spec"]["elo0"] ==
                                         settings.regression_elo0 and existing["spec"]["elo1"] == settings.regression_elo1):
                return {"created": False, "check": existing}
            spec = settings.abtest_spec(check_id, board_type, gating.model_agent(best, settings.search),
                                        gating.model_agent(previous, settings.search), regression=True)
            check = {"check_id": check_id, "board_type": board_type, "best": best, "previous": previous,
                     "spec": spec, "state": "running", "evidence": None, "outcome": None, "reason": None,
                     "created_at": time.time(), "finished_at": None}
            self._save_check(check)
        self._start_test(spec, epoch)
        return {"created": True, "check": check}

    def rollback_checks(self, board_type: str | None) -> list[dict[str, Any]]:
        with self.lock:
            return sorted((c for c in self.checks.values() if board_type in (None, c["board_type"])),
                          key=lambda c: c["created_at"])

    # --- leaderboard and trends ----------------------------------------------------------------------
    def leaderboard(self, board_type: str) -> dict[str, Any]:
        table = _call(lookup(TOURNAMENT_ACTOR).ratings.remote(board_type))
        ledger = self._ledger(board_type)
        with self.lock:
            cycles = {c["candidate"]: c for r in self.runs.values() for c in r["cycles"] if c["candidate"]}
        return trends.leaderboard(table, ledger, cycles)

    def trends(self, board_type: str, now: float) -> dict[str, Any]:
        with self.lock:
            runs = [r for r in self.runs.values() if r["request"]["board_type"] == board_type]
        return trends.summary(runs, self._ledger(board_type), now)

    def history(self, board_type: str, since: float | None) -> list[dict[str, Any]]:
        with self.lock:
            runs = [r for r in self.runs.values() if r["request"]["board_type"] == board_type]
        return trends.history(runs, self._ledger(board_type), since)


def _until(ledger: dict[str, Any], model_id: str) -> float | None:
    """When `model_id` last stopped being the best."""
    ats = [e["at"] for e in ledger["events"] if e["previous"] == model_id and e["kind"] != "non_regression_passed"]
    return max(ats, default=None)


def ensure_pipeline_actor(games: GameCatalog) -> Any:
    """Get or create the singleton on the head (its state is in the cluster store)."""
    return PipelineActor.options(name=PIPELINE_ACTOR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                                 scheduling_strategy=pinned(head_node_id())).remote(games)


def pipeline_actor() -> Any:
    return lookup(PIPELINE_ACTOR)
