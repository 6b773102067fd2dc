"""SyncActor: one per node, pinned to it. Owns the node's data manifest, serves file metadata to
its gateway, and runs the transfers handed to this node (as target), a bounded number at once,
lowest priority number first (a new best model, then training windows, then the rest).

What survives a failure: the digest cache and every sync job assigned here are rows in the
node's SQLite database, written before any byte moves; the bytes already received are in
`.partial` files. A restarted actor reloads its jobs, resumes every unfinished file from its
partial, and re-sends progress reports the leader has not acknowledged.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ray
import requests

from actors import sync_leader
from actors.naming import (CLUSTER_STORE, NAMESPACE, SYNC_PREFIX, election_name, lookup, peer_name, pinned, root_cause,
                           sync_name)
from orchestrator.config import Settings
from orchestrator.errors import ApiError, NotFound
from orchestrator.learn.registry import REGISTRY_KIND, ModelUnavailable
from orchestrator.store import NodeStore, node_db_path
from orchestrator.sync.manifest import FileEntry, cache_of, entry_for, matches, scan
from orchestrator.sync.plan import PRIORITY_MODEL, PRIORITY_TRAINING, Transfer, plan_transfers, queue_entries
from orchestrator.sync.paths import resolve_inside
from orchestrator.sync.transfer import (Fetch, Interrupted, Opened, TransferFailed, check_disk, transfer_file)

log = logging.getLogger(__name__)
HASHES_KEY = "sync:hashes"
ORIGINS_KEY = "sync:origins"  # relative path -> {"node_id", "sha256"} of each file copied here
JOB_PREFIX = "sync:job:"
HTTP_CHUNK_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
REPORT_INTERVAL_S = 1.0  # progress reports to the leader, at most this often per job
REPORT_RETRY_S = 2.0
PEER_CALL_TIMEOUT_S = 30.0
JOB_RETENTION_S = 7 * 86400.0  # finished, reported sync jobs older than this are forgotten
HOLDERS_KIND = "model_holders"  # cluster store: which node holds which model file, with its sha256
FILE_KINDS = ("policy_value", "nnue")  # registry kinds whose weights live in a file (agent_params are inline)


def http_fetch(base_url: str, sha256: str, token: str | None) -> Fetch:
    """The transfer seam over HTTP: `GET /sync/file` with Range from the offset, If-Range on the digest."""
    def fetch(path: str, offset: int) -> Opened:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if offset:
            headers.update({"Range": f"bytes={offset}-", "If-Range": f'"{sha256}"'})
        try:
            answer = requests.get(f"{base_url}/sync/file", params={"path": path}, headers=headers, stream=True,
                                 timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        except requests.RequestException as exc:
            raise Interrupted(f"{type(exc).__name__}: {exc}") from None
        if answer.status_code == 416 and offset:  # the partial is already whole; let the digest decide
            answer.close()
            return Opened(offset, iter(()), lambda: None)
        if answer.status_code not in (200, 206):
            answer.close()
            if answer.status_code in (400, 404):
                raise TransferFailed(f"{path}: source {base_url} answered {answer.status_code}", path=path)
            raise Interrupted(f"HTTP {answer.status_code} from {base_url}")
        if answer.headers.get("ETag", "").strip('"') != sha256:
            answer.close()
            raise TransferFailed(f"{path}: source {base_url} now holds another version "
                                 f"({answer.headers.get('ETag')}), not {sha256}", path=path)

        def chunks():
            try:
                yield from answer.raw.stream(HTTP_CHUNK_BYTES, decode_content=False)
            except Exception as exc:  # urllib3's protocol errors are neither OSErrors nor RequestExceptions
                raise Interrupted(f"{type(exc).__name__}: {exc}") from None
        return Opened(offset if answer.status_code == 206 else 0, chunks(), answer.close)
    return fetch


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class SyncActor:
    def __init__(self, node_id: str, settings: Settings) -> None:
        self.node_id = node_id
        self.settings = settings
        self.root = settings.node_dir()
        self.store = NodeStore(node_db_path(self.root))
        self.hashes: dict[str, dict] = self.store.get("kv", HASHES_KEY) or {}
        self.origins: dict[str, dict] = self.store.get("kv", ORIGINS_KEY) or {}
        self.entries: dict[str, FileEntry] = {}
        self.scanned_at: float | None = None
        self.jobs: dict[str, dict[str, Any]] = {key[len(JOB_PREFIX):]: doc for key, doc in self.store.load("kv").items()
                                                if key.startswith(JOB_PREFIX)}
        self.live_bytes: dict[str, int] = {}  # bytes of files still in flight, per job (not persisted)
        self.pool = ThreadPoolExecutor(settings.sync_max_concurrent + 1, thread_name_prefix="sync")
        self.last_report: dict[str, float] = {}
        self.report_locks: dict[str, asyncio.Lock] = {}
        self.recorded: set[str] = set()  # models whose holder record for this node is known written
        self.queue: asyncio.PriorityQueue | None = None
        self.order = itertools.count()
        self.scan_lock: asyncio.Lock | None = None
        if any(job["finished_at"] is None or not job["reported"] for job in self.jobs.values()):
            # Restarted by Ray with work left: nobody else knows to call us, so we call ourselves.
            ray.get_runtime_context().current_actor.resume.remote()

    async def where(self) -> dict[str, str]:
        """Which orchestrator node this is, on which Ray node, with which data directory."""
        return {"node_id": self.node_id, "ray_node_id": ray.get_runtime_context().get_node_id(),
                "data_dir": str(self.root)}

    async def resume(self) -> int:
        """Start the workers and re-queue unfinished files; returns how many jobs this node holds."""
        await self._started()
        return len(self.jobs)

    # --- startup ---------------------------------------------------------------------------
    async def _started(self) -> asyncio.PriorityQueue:
        """Workers and recovery start on the first call, inside the actor's event loop."""
        if self.queue is None:
            self.queue = asyncio.PriorityQueue()
            self.scan_lock = asyncio.Lock()
            for _ in range(self.settings.sync_max_concurrent):
                asyncio.get_running_loop().create_task(self._worker())
            self._forget_old_jobs(time.time())
            for sync_id, job in self.jobs.items():
                self._enqueue(sync_id, job)
                if job["files_done"] + len(job["errors"]) == len(job["transfers"]) and not job.get("reported"):
                    asyncio.get_running_loop().create_task(self._report(sync_id, final=True))
        return self.queue

    def _forget_old_jobs(self, now: float) -> None:
        old = [sync_id for sync_id, job in self.jobs.items() if job["reported"] and job["finished_at"] is not None
               and now - job["finished_at"] > JOB_RETENTION_S]
        for sync_id in old:
            del self.jobs[sync_id]
        self.store.delete("kv", [JOB_PREFIX + sync_id for sync_id in old])

    # --- manifest --------------------------------------------------------------------------
    async def manifest(self, refresh: bool = False) -> dict[str, Any]:
        """This node's synced files. A refresh walks the tree and rehashes only changed files."""
        await self._started()
        stats = None
        if refresh or self.scanned_at is None:
            async with self.scan_lock:
                entries, stats = await asyncio.get_running_loop().run_in_executor(self.pool, scan, self.root,
                                                                                   self.hashes)
                self.entries, self.scanned_at = entries, time.time()
                self.hashes = cache_of(entries)
                self.store.put("kv", HASHES_KEY, self.hashes)
        answer = {"node_id": self.node_id, "scanned_at": self.scanned_at, "file_count": len(self.entries),
                  "total_bytes": sum(e.size for e in self.entries.values()),
                  "files": [e.to_dict() for e in self.entries.values()]}
        if stats is not None:
            answer["rehashed"] = {"files": stats.hashed, "bytes": stats.bytes_hashed}
        return answer

    async def file_info(self, relative: str) -> dict[str, Any]:
        """Where a requested file is and its digest: 400 for a path that escapes, 404 for anything
        that is not a synced regular file inside the data directory."""
        await self._started()
        target = resolve_inside(self.root, relative)
        real = target.relative_to(self.root).as_posix()
        entry = await asyncio.get_running_loop().run_in_executor(self.pool, entry_for, self.root, real,
                                                                 self.hashes.get(real))
        if entry is None:
            raise NotFound(f"no synced file {relative!r} on {self.node_id}", path=relative)
        self.hashes[real] = {"size": entry.size, "mtime_ns": entry.mtime_ns, "sha256": entry.sha256}
        return {"abs_path": str(target), **entry.to_dict()}

    # --- transfers into this node ------------------------------------------------------------
    async def start_sync(self, sync_id: str, transfers: list[dict[str, Any]], sources: dict[str, str],
                         report: bool = True) -> dict[str, Any]:
        """Accept transfers as target (idempotent per sync_id); 507 if they would fill the disk."""
        await self._started()
        if sync_id in self.jobs:
            return self._view(sync_id)
        self._forget_old_jobs(time.time())
        check_disk(self.root, sum(t["size"] for t in transfers), self.settings.sync_disk_limit_percent)
        job = {"sync_id": sync_id, "transfers": transfers, "sources": sources, "state": {}, "files_done": 0,
               "bytes_done": 0, "bytes_resumed": 0, "clean_retries": 0, "errors": [], "created_at": time.time(),
               "finished_at": None, "report": report,
               "reported": not report}
        self.jobs[sync_id] = job
        self.store.put("kv", JOB_PREFIX + sync_id, job)  # before any byte moves
        self._enqueue(sync_id, job)
        return self._view(sync_id)

    # --- as leader: planned syncs -----------------------------------------------------------------
    async def start_planned(self, request_doc: dict[str, Any], sync_id: str, priority: int) -> dict[str, Any]:
        """`POST /sync/start`: plan from the manifests, record, hand over (see actors.sync_leader)."""
        await self._started()
        return await sync_leader.start_planned(self, request_doc, sync_id, priority)

    async def sync_training(self, board_type: str, target: str, sync_id: str,
                            wait_s: float | None = None) -> dict[str, Any]:
        """A board's training data to its training node, ahead of other transfers: `POST /sync/training`,
        and the leader's first step when it starts a training run there, which waits (`wait_s`) until
        the target holds every file, or raises naming what did not arrive."""
        await self._started()
        doc = {"patterns": [f"selfplay/{board_type}/**", f"training/{board_type}/**"], "since_timestamp": None,
               "source_node": None, "target_nodes": [target]}
        started = await sync_leader.start_planned(self, doc, sync_id, PRIORITY_TRAINING)
        if wait_s is not None:
            started["target"] = await sync_leader.wait_for_target(self, started["record"], target, wait_s)
        return started

    async def check_space(self, incoming_bytes: int) -> None:
        """507 if `incoming_bytes` more would fill this node's disk past the configured limit."""
        check_disk(self.root, incoming_bytes, self.settings.sync_disk_limit_percent)

    # --- what jobs need here ------------------------------------------------------------------
    async def _alive_peers(self) -> dict[str, str]:
        """node_id -> gateway URL of every other alive node, from this node's membership view."""
        snapshot = await lookup(peer_name(self.node_id)).snapshot.remote()
        return {p["node_id"]: f"http://{p['host']}:{p['port']}" for p in snapshot["peers"]
                if p["state"] == "alive" and p["node_id"] != self.node_id and p["host"] and p["port"]}

    async def _remote_manifest(self, node_id: str) -> dict[str, FileEntry]:
        manifest = await asyncio.wait_for(lookup(sync_name(node_id)).manifest.remote(True), PEER_CALL_TIMEOUT_S)
        return {f["path"]: FileEntry.from_dict(f) for f in manifest["files"]}

    async def fetch_model(self, model_id: str, queued: bool = False) -> dict[str, Any]:
        """Make a registered model's file present here, verified against the registry's sha256,
        fetched from an alive node that holds that version. ModelUnavailable names the model if
        no node can give it. Each node that holds the file is recorded in the cluster store.

        A job waiting for its model fetches it at once, beside the queue; a pushed new best model
        (`queued`) goes through this node's transfer queue at the top priority instead: next to
        start, ahead of every waiting transfer, within the node's concurrency bound."""
        await self._started()
        doc = await lookup(CLUSTER_STORE).read.remote(REGISTRY_KIND, model_id)
        if doc is None:
            raise ModelUnavailable(f"model {model_id!r} is not in the model registry")
        if doc["kind"] not in FILE_KINDS:
            return {"model_id": model_id, "fetched": False, "source_node": None}
        path, sha256 = doc["path"], doc["sha256"]
        held = await asyncio.get_running_loop().run_in_executor(self.pool, entry_for, self.root, path,
                                                                self.hashes.get(path))
        if held is not None and held.sha256 == sha256:
            if model_id not in self.recorded:  # a file trained or pushed here: recorded once per incarnation
                await self._record_holder(model_id, path, sha256)
            return {"model_id": model_id, "path": path, "fetched": False, "source_node": self.node_id}
        peers = await self._alive_peers()
        infos = await asyncio.gather(*(asyncio.wait_for(lookup(sync_name(n)).file_info.remote(path),
                                                        PEER_CALL_TIMEOUT_S) for n in peers), return_exceptions=True)
        holders = {n: info for n, info in zip(peers, infos) if isinstance(info, dict) and info["sha256"] == sha256}
        if not holders:
            why = {n: type(root_cause(i)).__name__ if isinstance(i, BaseException) else "other version"
                   for n, i in zip(peers, infos)}
            asked = ", ".join(f"{n} ({reason})" for n, reason in why.items()) or "no alive peers"
            raise ModelUnavailable(f"model {model_id}: no alive node holds {path} with sha256 {sha256[:12]}; "
                                   f"asked {asked}")
        check_disk(self.root, next(iter(holders.values()))["size"], self.settings.sync_disk_limit_percent)
        errors = []
        for node_id, info in holders.items():
            if queued:
                failed = await self._fetch_queued(Transfer(path, sha256, info["size"], node_id, self.node_id,
                                                           PRIORITY_MODEL), peers[node_id])
                if failed:
                    errors.append(f"{node_id}: {failed}")
                    continue
            else:
                fetch = http_fetch(peers[node_id], sha256, self.settings.token())
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        self.pool, lambda: transfer_file(self.root, path, sha256, info["size"], fetch))
                except ApiError as exc:
                    errors.append(f"{node_id}: {exc.message}")
                    continue
            await self._record_holder(model_id, path, sha256)
            return {"model_id": model_id, "path": path, "fetched": True, "source_node": node_id}
        raise ModelUnavailable(f"model {model_id}: fetching {path} failed from every holder: {'; '.join(errors)}")

    async def _fetch_queued(self, transfer: Transfer, source_url: str) -> str | None:
        """One transfer as a sync job of this node's queue, waited for; the error, or None once done."""
        sync_id = f"model-{uuid.uuid4().hex[:12]}"
        await self.start_sync(sync_id, [transfer.to_dict()], {transfer.source_node: source_url}, report=False)
        while self.jobs[sync_id]["finished_at"] is None:
            await asyncio.sleep(0.2)
        errors = self.jobs[sync_id]["errors"]
        return errors[0]["error"] if errors else None

    async def _record_holder(self, model_id: str, path: str, sha256: str) -> None:
        """Best effort, through whichever node leads now (its epoch fences the write); the files
        themselves stay the truth, so a lost record costs nothing but a wider search."""
        try:
            store = lookup(CLUSTER_STORE)
            key = f"{model_id}@{self.node_id}"
            known = await store.read.remote(HOLDERS_KIND, key)
            _, leader = await store.highest_epoch.remote()
            if (known or {}).get("sha256") != sha256:
                if leader is None:
                    return
                await asyncio.wait_for(lookup(election_name(leader)).leader_write.remote(
                    HOLDERS_KIND, key, {"model_id": model_id, "node_id": self.node_id, "path": path,
                                        "sha256": sha256, "recorded_at": time.time()}), PEER_CALL_TIMEOUT_S)
            self.recorded.add(model_id)
        except Exception as exc:  # no leader right now, or it is changing: the next fetch records it
            log.info("model %s: holder record not written: %s", model_id, root_cause(exc))

    async def gather(self, patterns: list[str], sync_id: str) -> dict[str, Any]:
        """Fetch here every file matching `patterns` that another alive node holds and this node lacks
        (or holds in another version), as one training-priority job, and wait for it. Returns the node
        each matching file here came from (fetched now or by an earlier sync; files this node wrote
        are not listed), for the lineage of whatever reads them."""
        await self._started()
        peers = await self._alive_peers()
        answers = await asyncio.gather(*(self._remote_manifest(n) for n in peers), return_exceptions=True)
        manifests = {n: a for n, a in zip(peers, answers) if not isinstance(a, BaseException)}
        await self.manifest(True)
        manifests[self.node_id] = self.entries
        plan = plan_transfers(manifests, patterns, target_nodes=[self.node_id], priority=PRIORITY_TRAINING)
        if plan.transfers and sync_id not in self.jobs:
            await self.start_sync(sync_id, [t.to_dict() for t in plan.transfers], peers, report=False)
        while sync_id in self.jobs and self.jobs[sync_id]["finished_at"] is None:
            await asyncio.sleep(0.2)
        job = self.jobs.get(sync_id) or {"files_done": 0, "bytes_done": 0, "errors": []}
        return {"sync_id": sync_id, "files_fetched": job["files_done"], "bytes_fetched": job["bytes_done"],
                "errors": job["errors"], "unreachable": sorted(set(peers) - set(manifests)),
                "sources": self._origins_of(patterns)}

    def _origins_of(self, patterns: list[str]) -> dict[str, str]:
        """Source node of each copied file matching `patterns`, while the file here is still that copy."""
        return {path: origin["node_id"] for path, origin in sorted(self.origins.items())
                if any(matches(path, p) for p in patterns)
                and self.hashes.get(path, {}).get("sha256") == origin["sha256"]}

    async def push_model(self, model_id: str) -> dict[str, Any]:
        """A new best model goes to every alive node now: each fetches it as the top-priority entry
        of its transfer queue, ahead of the transfers waiting there. Per node: where it came from,
        or why it could not."""
        await self._started()
        peers = await self._alive_peers()
        nodes = [self.node_id, *peers]
        answers = await asyncio.gather(*(asyncio.wait_for(lookup(sync_name(n)).fetch_model.remote(model_id, True),
                                                          FETCH_TIMEOUT_S) for n in nodes), return_exceptions=True)
        result = {n: ({"error": f"{type(root_cause(a)).__name__}: {root_cause(a)}"} if isinstance(a, BaseException)
                      else a) for n, a in zip(nodes, answers)}
        for node_id, answer in result.items():
            if "error" in answer:  # nobody may be waiting for this answer: leave a trace
                log.warning("model %s not pushed to %s: %s", model_id, node_id, answer["error"])
        return result

    def _enqueue(self, sync_id: str, job: dict[str, Any]) -> None:
        for entry in queue_entries(sync_id, job["transfers"], job["state"], self.order):
            self.queue.put_nowait(entry)

    async def _worker(self) -> None:
        while True:
            _, _, sync_id, index = await self.queue.get()
            try:
                await self._transfer(sync_id, index)
            except Exception:  # one bad file must never stop the worker
                log.exception("sync %s file %d", sync_id, index)

    async def _transfer(self, sync_id: str, index: int) -> None:
        job = self.jobs[sync_id]
        spec = job["transfers"][index]
        fetch = http_fetch(job["sources"][spec["source_node"]], spec["sha256"], self.settings.token())

        def count(n: int) -> None:
            self.live_bytes[sync_id] = self.live_bytes.get(sync_id, 0) + n

        def run():
            return transfer_file(self.root, spec["path"], spec["sha256"], spec["size"], fetch, on_bytes=count)
        try:
            result = await asyncio.get_running_loop().run_in_executor(self.pool, run)
        except ApiError as exc:
            job["state"][str(index)] = "failed"
            job["errors"].append({"path": spec["path"], "source_node": spec["source_node"], "error": exc.message})
        else:
            job["state"][str(index)] = "done"
            job["files_done"] += 1
            job["bytes_done"] += spec["size"]
            job["bytes_resumed"] += result.resumed_from
            job["clean_retries"] += result.clean_retries
            mtime_ns = (self.root / spec["path"]).stat().st_mtime_ns
            self.hashes[spec["path"]] = {"size": spec["size"], "mtime_ns": mtime_ns, "sha256": result.sha256}
            self.origins[spec["path"]] = {"node_id": spec["source_node"], "sha256": result.sha256}
            self.store.put("kv", ORIGINS_KEY, self.origins)  # before anyone is told the file is here
        self.live_bytes.pop(sync_id, None)
        finished = job["files_done"] + len(job["errors"]) == len(job["transfers"])
        if finished:
            job["finished_at"] = time.time()
        self.store.put("kv", JOB_PREFIX + sync_id, job)
        if job["report"]:
            await self._report(sync_id, final=finished)

    # --- progress ----------------------------------------------------------------------------
    def _view(self, sync_id: str) -> dict[str, Any]:
        job = self.jobs.get(sync_id)
        if job is None:
            raise NotFound(f"no sync {sync_id!r} on {self.node_id}", sync_id=sync_id)
        return {"sync_id": sync_id, "node_id": self.node_id, "files_total": len(job["transfers"]),
                "files_done": job["files_done"], "bytes_total": sum(t["size"] for t in job["transfers"]),
                "bytes_done": job["bytes_done"] + self.live_bytes.get(sync_id, 0), "errors": job["errors"],
                "bytes_resumed": job["bytes_resumed"], "clean_retries": job["clean_retries"],
                "created_at": job["created_at"], "finished_at": job["finished_at"],
                "done": job["finished_at"] is not None}

    async def status(self, sync_id: str) -> dict[str, Any]:
        await self._started()
        return self._view(sync_id)

    async def _report(self, sync_id: str, final: bool) -> None:
        """POST /sync/job_update to this node's gateway (forwarded to the leader). A final report is
        retried until the leader takes it; progress reports are best effort, at most one a second.
        One report per job at a time, its body read under the lock, so a later report never carries
        older numbers than an earlier one."""
        job = self.jobs[sync_id]
        now = time.monotonic()
        if not final and now - self.last_report.get(sync_id, 0.0) < REPORT_INTERVAL_S:
            return
        self.last_report[sync_id] = now
        async with self.report_locks.setdefault(sync_id, asyncio.Lock()):
            if job["reported"]:
                return
            while True:
                view = self._view(sync_id)
                body = {key: view[key] for key in ("sync_id", "node_id", "files_done", "files_total", "bytes_done",
                                                   "bytes_total", "bytes_resumed", "clean_retries", "errors", "done")}
                status = await asyncio.get_running_loop().run_in_executor(self.pool, self._post_update, body)
                if status == 200 or not final:
                    break
                if status in (400, 404):  # the leader will never take it (no such sync): keep it here only
                    log.warning("sync %s: the leader refused the final report (%d)", sync_id, status)
                    break
                await asyncio.sleep(REPORT_RETRY_S)
            if final:
                job["reported"] = True
                self.store.put("kv", JOB_PREFIX + sync_id, job)

    def _gateway_url(self) -> str:
        host = self.settings.advertise_host or self.settings.host
        host = "127.0.0.1" if host in (None, "0.0.0.0", "::") else host
        return f"http://{host}:{self.settings.port}"

    def _post_update(self, body: dict[str, Any]) -> int | None:
        token = self.settings.token()
        try:
            answer = requests.post(f"{self._gateway_url()}/sync/job_update", json=body, timeout=READ_TIMEOUT_S,
                                    headers={"Authorization": f"Bearer {token}"} if token else {})
        except requests.RequestException as exc:
            log.warning("sync %s: progress report failed: %s", body["sync_id"], exc)
            return None
        return answer.status_code


def ensure_sync_actor(settings: Settings, ray_node_id: str) -> Any:
    return SyncActor.options(name=sync_name(settings.node_id), namespace=NAMESPACE, lifetime="detached",
                             get_if_exists=True, scheduling_strategy=pinned(ray_node_id)).remote(settings.node_id,
                                                                                                 settings)


# --- what a job's Ray task calls, on its own node -------------------------------------------------
FETCH_TIMEOUT_S = 600.0
GATHERING_JOB_TYPES = ("training", "nnue_training")  # they read the whole cluster's self-play, not one node's


class SyncActorGone(RuntimeError):
    """The node's SyncActor is no longer registered (its node stopped). Not the ValueError `lookup`
    raises, which callers could not tell from ModelUnavailable (a ValueError too)."""


def fetch_model_file(node_id: str, model_id: str) -> dict[str, Any]:
    """Before a job on `node_id` loads `model_id`: its file is here and verified, or ModelUnavailable."""
    try:
        sync = lookup(sync_name(node_id))
    except ValueError:
        raise SyncActorGone(f"node {node_id} has no SyncActor") from None
    try:
        return ray.get(sync.fetch_model.remote(model_id), timeout=FETCH_TIMEOUT_S)
    except ray.exceptions.RayTaskError as exc:
        raise root_cause(exc) from None


def gather_selfplay(node_id: str, job_id: str, attempt: int, board_type: str) -> dict[str, Any]:
    """Before a training job on `node_id` reads its window: every self-play file of `board_type` that
    another alive node holds is copied here (verified). Returns the sources, for the run's lineage."""
    from orchestrator.play.selfplay import job_directory  # torch comes with it: this runs in the job's process only
    tree = job_directory(Path("."), board_type, "_").parent.as_posix()
    try:
        return ray.get(lookup(sync_name(node_id)).gather.remote([f"{tree}/**"], f"gather-{job_id}-{attempt}"),
                       timeout=FETCH_TIMEOUT_S)
    except ray.exceptions.RayTaskError as exc:
        raise root_cause(exc) from None


def push_best_model(model_id: str) -> None:
    """A new best model: have the leader's SyncActor push it to every alive node, without waiting
    (each node's fetch is idempotent and verified; failures are logged there). Best effort: a node
    still without it fetches it when a job first loads it."""
    try:
        _, leader = ray.get(lookup(CLUSTER_STORE).highest_epoch.remote(), timeout=PEER_CALL_TIMEOUT_S)
        if leader is not None:
            lookup(sync_name(leader)).push_model.remote(model_id)
    except Exception as exc:  # the ledger is already written; the push must not undo the promotion
        log.warning("model %s: push to every node not started: %s", model_id, root_cause(exc))


_HERE: dict[str, dict[str, str]] = {}  # Ray node id -> this process's answer from `where` (per process)


def node_here(refresh: bool = False) -> dict[str, str] | None:
    """The orchestrator node on the Ray node this code runs on (a task Ray placed anywhere), or None."""
    here = ray.get_runtime_context().get_node_id()
    if refresh:
        _HERE.pop(here, None)
    if here not in _HERE:
        for actor in ray.util.list_named_actors(all_namespaces=True):
            if actor["namespace"] != NAMESPACE or not actor["name"].startswith(SYNC_PREFIX):
                continue
            try:
                info = ray.get(lookup(actor["name"]).where.remote(), timeout=PEER_CALL_TIMEOUT_S)
            except Exception:  # a node going away: look at the next one
                continue
            if info["ray_node_id"] == here:
                _HERE[here] = info
                break
    return _HERE.get(here)
