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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
import requests

from actors.naming import NAMESPACE, pinned, sync_name
from orchestrator.config import Settings
from orchestrator.errors import ApiError, NotFound
from orchestrator.store import NodeStore, node_db_path
from orchestrator.sync.manifest import FileEntry, cache_of, entry_for, scan
from orchestrator.sync.paths import resolve_inside
from orchestrator.sync.transfer import (Fetch, Interrupted, Opened, TransferFailed, check_disk, transfer_file)

log = logging.getLogger(__name__)
HASHES_KEY = "sync:hashes"
JOB_PREFIX = "sync:job:"
HTTP_CHUNK_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
REPORT_INTERVAL_S = 1.0  # progress reports to the leader, at most this often per job
REPORT_RETRY_S = 2.0


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
            except (requests.RequestException, OSError, Exception) as exc:  # urllib3 errors are not OSErrors
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
        self.entries: dict[str, FileEntry] = {}
        self.scanned_at: float | None = None
        self.jobs: dict[str, dict[str, Any]] = {key[len(JOB_PREFIX):]: doc for key, doc in self.store.load("kv").items()
                                                if key.startswith(JOB_PREFIX)}
        self.live_bytes: dict[str, int] = {}  # bytes of files still in flight, per job (not persisted)
        self.pool = ThreadPoolExecutor(settings.sync_max_concurrent + 1, thread_name_prefix="sync")
        self.last_report: dict[str, float] = {}
        self.queue: asyncio.PriorityQueue | None = None
        self.order = itertools.count()
        self.scan_lock: asyncio.Lock | None = None
        if any(job["finished_at"] is None or not job["reported"] for job in self.jobs.values()):
            # Restarted by Ray with work left: nobody else knows to call us, so we call ourselves.
            ray.get_runtime_context().current_actor.resume.remote()

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
            for sync_id, job in self.jobs.items():
                self._enqueue(sync_id, job)
                if job["files_done"] + len(job["errors"]) == len(job["transfers"]) and not job.get("reported"):
                    asyncio.get_running_loop().create_task(self._report(sync_id, final=True))
        return self.queue

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
        check_disk(self.root, sum(t["size"] for t in transfers), self.settings.sync_disk_limit_percent)
        job = {"sync_id": sync_id, "transfers": transfers, "sources": sources, "state": {}, "files_done": 0,
               "bytes_done": 0, "bytes_resumed": 0, "clean_retries": 0, "errors": [], "created_at": time.time(), "finished_at": None, "report": report,
               "reported": not report}
        self.jobs[sync_id] = job
        self.store.put("kv", JOB_PREFIX + sync_id, job)  # before any byte moves
        self._enqueue(sync_id, job)
        return self._view(sync_id)

    async def check_space(self, incoming_bytes: int) -> None:
        """507 if `incoming_bytes` more would fill this node's disk past the configured limit."""
        check_disk(self.root, incoming_bytes, self.settings.sync_disk_limit_percent)

    async def ensure_file(self, path: str, sha256: str, size: int, sources: dict[str, str]) -> dict[str, Any]:
        """Make this node hold `path` with `sha256`, from the first source that can give it (a model
        asked for by a job). Raises TransferFailed when none can."""
        await self._started()
        held = self.hashes.get(path)
        current = await asyncio.get_running_loop().run_in_executor(self.pool, entry_for, self.root, path, held)
        if current is not None and current.sha256 == sha256:
            return {"path": path, "fetched": False, "source_node": self.node_id}
        check_disk(self.root, size, self.settings.sync_disk_limit_percent)
        failures = []
        for node_id, url in sources.items():
            fetch = http_fetch(url, sha256, self.settings.token())
            try:
                await asyncio.get_running_loop().run_in_executor(self.pool, lambda: transfer_file(
                    self.root, path, sha256, size, fetch))
            except ApiError as exc:
                failures.append(f"{node_id}: {exc.message}")
                continue
            return {"path": path, "fetched": True, "source_node": node_id}
        raise TransferFailed(f"{path} could not be fetched from any holder: {'; '.join(failures) or 'none known'}",
                             path=path)

    def _enqueue(self, sync_id: str, job: dict[str, Any]) -> None:
        for index, transfer in enumerate(job["transfers"]):
            if str(index) not in job["state"]:
                self.queue.put_nowait((transfer["priority"], next(self.order), sync_id, index))

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
            self.hashes[spec["path"]] = {"size": spec["size"], "mtime_ns": (self.root / spec["path"]).stat().st_mtime_ns,
                                         "sha256": result.sha256}
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
        retried until the leader takes it; progress reports are best effort, at most one a second."""
        job = self.jobs[sync_id]
        now = time.monotonic()
        if not final and now - self.last_report.get(sync_id, 0.0) < REPORT_INTERVAL_S:
            return
        self.last_report[sync_id] = now
        body = self._view(sync_id)
        body = {key: body[key] for key in ("sync_id", "node_id", "files_done", "files_total", "bytes_done",
                                           "bytes_total", "bytes_resumed", "clean_retries", "errors", "done")}
        while True:
            ok = await asyncio.get_running_loop().run_in_executor(self.pool, self._post_update, body)
            if ok or not final:
                break
            await asyncio.sleep(REPORT_RETRY_S)
        if ok and final:
            job["reported"] = True
            self.store.put("kv", JOB_PREFIX + sync_id, job)

    def _gateway_url(self) -> str:
        host = self.settings.advertise_host or self.settings.host
        host = "127.0.0.1" if host in (None, "0.0.0.0", "::") else host
        return f"http://{host}:{self.settings.port}"

    def _post_update(self, body: dict[str, Any]) -> bool:
        token = self.settings.token()
        try:
            answer = requests.post(f"{self._gateway_url()}/sync/job_update", json=body, timeout=READ_TIMEOUT_S,
                                    headers={"Authorization": f"Bearer {token}"} if token else {})
        except requests.RequestException as exc:
            log.warning("sync %s: progress report failed: %s", body["sync_id"], exc)
            return False
        return answer.status_code == 200


def ensure_sync_actor(settings: Settings, ray_node_id: str) -> Any:
    return SyncActor.options(name=sync_name(settings.node_id), namespace=NAMESPACE, lifetime="detached",
                             get_if_exists=True, scheduling_strategy=pinned(ray_node_id)).remote(settings.node_id,
                                                                                                 settings)
