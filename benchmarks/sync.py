"""Data-sync throughput: 1 GiB over loopback HTTP against `cp` of the same files, in one run.

    ours      the production path: the gateway's `/sync/file` handler serving (sendfile, ETag =
              sha256, Range) in a separate server process, and `transfer_file` over `http_fetch`
              receiving (streamed to a partial file, sha256 verified, fsync, rename), with
              `sync_max_concurrent` (default 4) files in flight, as a SyncActor runs them
    cp        `cp` of the same files into an empty directory (no verification, no fsync)
    cp+sync   the same, then `sync FILE...` of the copies: the durability ours gives (data on disk
              before the file appears under its name), still without verification
    sha256    hashing the same files from the page cache, one thread: the floor of any transfer that
              verifies what it received (printed for reference)

Both read the source from the page cache (warmed before the first round). Rounds alternate the
order; medians are compared. Target: ours / cp >= 0.8. Every file received is checked against the
source's sha256 (transfer_file refuses to install anything else). On a box whose disk writes are
slower than memory, the fsync dominates: compare with cp+sync for the cost of the rest.

    .venv/bin/python benchmarks/sync.py [--total-mib 1024] [--files 8] [--rounds 3] [--concurrency 4]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHUNK_BYTES = 1 << 20


def serve(root: str, port: int) -> None:
    """The server process: `/sync/file` through the gateway's own send path."""
    from aiohttp import web

    from orchestrator.gateway.routes_sync import _send_file
    from orchestrator.sync.manifest import cache_of, entry_for, scan
    from orchestrator.sync.paths import resolve_inside

    cache = cache_of(scan(Path(root), {})[0])  # digests known before serving, as a SyncActor's manifest holds them

    async def handle(request: web.Request) -> web.StreamResponse:
        relative = request.query["path"]
        target = resolve_inside(Path(root), relative)  # what SyncActor.file_info does, without the actor hop
        entry = entry_for(Path(root), relative, cache.get(relative))
        return await _send_file(request, {"abs_path": str(target), **entry.to_dict()})

    app = web.Application()
    app.router.add_get("/sync/file", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def ours(url: str, dest: Path, files: list[tuple[str, str, int]], concurrency: int) -> float:
    from actors.sync import http_fetch
    from orchestrator.sync.transfer import transfer_file

    def one(spec):
        path, sha, size = spec
        result = transfer_file(dest, path, sha, size, http_fetch(url, sha, None))
        assert result.bytes_fetched == size and not result.already_present
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, files))
    return time.perf_counter() - started


def baseline(source: Path, dest: Path, durable: bool) -> float:
    dest.mkdir(parents=True)
    names = sorted(str(p) for p in source.iterdir())
    started = time.perf_counter()
    subprocess.run(["cp", *names, str(dest)], check=True)
    if durable:
        subprocess.run(["sync", *(str(dest / Path(n).name) for n in names)], check=True)
    return time.perf_counter() - started


def hash_only(files: list[Path]) -> float:
    from orchestrator.sync.manifest import sha256_file
    started = time.perf_counter()
    for path in files:
        sha256_file(path)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--total-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--serve", nargs=2, metavar=("ROOT", "PORT"))
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return

    from orchestrator.sync.manifest import scan

    work = Path(tempfile.mkdtemp(prefix="sync-bench-"))
    server = None
    try:
        root = work / "source"
        tree = root / "selfplay" / "bench" / "job"
        tree.mkdir(parents=True)
        size = args.total_mib * (1 << 20) // args.files
        for i in range(args.files):
            with open(tree / f"games-{i}.jsonl", "wb") as handle:
                for _ in range(size // CHUNK_BYTES):
                    handle.write(os.urandom(CHUNK_BYTES))
        entries, _ = scan(root, {})  # the digests a manifest would hold (and a warm page cache)
        files = [(e.path, e.sha256, e.size) for e in entries.values()]
        total = sum(f[2] for f in files)
        port = _port()
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(root), str(port)])
        _wait_up(port)
        url = f"http://127.0.0.1:{port}"
        # One untimed pass of each, so neither pays for first-touch costs (allocator, page cache, disk).
        ours(url, work / "warmup", files, args.concurrency)
        baseline(tree, work / "warmup-cp", durable=True)
        shutil.rmtree(work / "warmup")
        shutil.rmtree(work / "warmup-cp")
        times: dict[str, list[float]] = {"ours": [], "cp": [], "cp+sync": []}
        for round_ in range(args.rounds):
            order = ("ours", "cp", "cp+sync") if round_ % 2 == 0 else ("cp+sync", "cp", "ours")
            for name in order:
                subprocess.run(["sync"], check=True)  # no round pays for the previous one's dirty pages
                dest = work / f"{name}-{round_}"
                if name == "ours":
                    times[name].append(ours(url, dest, files, args.concurrency))
                    for path, sha, _ in files:
                        assert (dest / path).is_file()
                else:
                    times[name].append(baseline(tree, dest, durable=name == "cp+sync"))
                shutil.rmtree(dest)
        ours_s, cp_s = statistics.median(times["ours"]), statistics.median(times["cp"])
        durable_s = statistics.median(times["cp+sync"])
        hash_s = statistics.median(hash_only(sorted(tree.iterdir())) for _ in range(args.rounds))
        gib = total / 2**30
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {len(files)} files, {gib:.2f} GiB; "
              f"{args.rounds} rounds, concurrency {args.concurrency}")
        print(f"ours (HTTP, sha256-verified, fsync+rename): median {ours_s:.2f} s = {gib / ours_s:.2f} GiB/s "
              f"(rounds: {', '.join(f'{t:.2f}' for t in times['ours'])})")
        print(f"cp:                                         median {cp_s:.2f} s = {gib / cp_s:.2f} GiB/s "
              f"(rounds: {', '.join(f'{t:.2f}' for t in times['cp'])})")
        print(f"cp+sync:                                    median {durable_s:.2f} s = {gib / durable_s:.2f} GiB/s "
              f"(rounds: {', '.join(f'{t:.2f}' for t in times['cp+sync'])})")
        print(f"sha256 alone (1 thread, page cache):       median {hash_s:.2f} s = {gib / hash_s:.2f} GiB/s")
        print(f"throughput ours / cp: {cp_s / ours_s:.2f}x (target >= 0.8x); ours / cp+sync: {durable_s / ours_s:.2f}x")
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
