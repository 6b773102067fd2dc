"""Restarting this node's process after a code update, so that the new code runs.

The launcher installs how its process stops serving (gracefully: in-flight requests finish, the
node's own workers are stopped, an embedded cluster head is shut down); after that it re-executes
itself with the same arguments, which starts everything again from the new code. Before the node's
actors go, its jobs are suspended: each stops at its next unit boundary, and the new process's
supervisor resumes them from their rows in the node's SQLite file as a new attempt. A
process with no launcher (a test harness, a program that embeds the node) has nothing installed,
and a request says so instead of pretending.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Callable

_lock = threading.Lock()
_stop_serving: Callable[[], None] | None = None
_requested = False


def install(stop_serving: Callable[[], None]) -> None:
    """Called once by the launcher; `stop_serving` must be safe to call from any thread."""
    global _stop_serving
    with _lock:
        _stop_serving = stop_serving


def available() -> bool:
    return _stop_serving is not None


def request() -> bool:
    """Stop serving so the launcher restarts this process; False when no launcher can."""
    global _requested
    with _lock:
        if _stop_serving is None:
            return False
        _requested = True
        action = _stop_serving
    action()
    return True


def requested() -> bool:
    """Whether serving stopped for a restart (a code update) rather than for good."""
    return _requested


def exec_if_requested() -> None:
    """In the launcher, after serving stopped: replace this process by a fresh one, same arguments."""
    if _requested:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, list(sys.orig_argv))
