"""Git operations on the deployed checkout: status after a bounded fetch, fast-forward-only updates.

git always runs from an argument list (never a shell), with a timeout, with prompts switched
off and with `--end-of-options` before anything that names a ref, so no ref can turn into an
option (`--upload-pack=...`) or a command (`main;id`, `$(id)`). A ref from outside must be a
plain branch name or a 40-hex commit before git sees it.

What survives a failure: nothing here keeps state of its own. The remote's last known position
is git's remote-tracking ref, so when a fetch fails (offline) the status still reports behind and
ahead as of the last fetch that worked (its time is FETCH_HEAD's mtime) plus the error. An update
either fast-forwards (git moves HEAD atomically) or leaves the checkout as it was.
"""
from __future__ import annotations

import os
import re
import subprocess
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import BadRequest, Conflict, NotFound, Unavailable

HEX_COMMIT = re.compile(r"^[0-9a-fA-F]{40}$")
# Stricter than git's check-ref-format: no leading '-', no shell or revision syntax at all.
BRANCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "LC_ALL": "C"}


def is_branch_name(ref: str) -> bool:
    return bool(BRANCH_NAME.fullmatch(ref)) and ".." not in ref and "//" not in ref and "/." not in ref \
        and not ref.endswith(("/", ".", ".lock"))


def check_ref(ref: str, field: str = "ref") -> str:
    """A plain branch name or a 40-hex commit (lowercased); anything else is a 400 naming `field`."""
    if HEX_COMMIT.fullmatch(ref):
        return ref.lower()
    if is_branch_name(ref):
        return ref
    raise BadRequest(f"{field}: must be a plain branch name or a 40-hex commit, got {ref!r}", field=field)


@dataclass(frozen=True)
class GitStatus:
    branch: str | None  # None: detached HEAD
    commit: str
    dirty: bool
    behind: int | None  # None: the upstream was never fetched
    ahead: int | None
    upstream: str
    fetched_at: float | None  # when a fetch last succeeded
    error: str | None = None  # why this status could not fetch (the numbers are from `fetched_at`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GitRepo:
    """One checkout, updated from `remote` and compared with `remote`/`branch`."""

    def __init__(self, path: Path, remote: str = "origin", branch: str = "main", timeout_s: float = 30.0) -> None:
        if not is_branch_name(remote):
            raise ValueError(f"git remote {remote!r} is not a plain name")
        self.path = Path(path)
        self.remote = remote
        self.branch = check_ref(branch, field="git_branch")
        self.timeout_s = timeout_s
        self._updating = threading.Lock()
        self._fetching = threading.Lock()  # concurrent fetches would race for the same ref locks

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run(["git", "-C", str(self.path), *args], capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=self.timeout_s, env={**os.environ, **GIT_ENV})
        except subprocess.TimeoutExpired:
            raise Unavailable(f"git {args[0]} did not finish within {self.timeout_s}s") from None
        except FileNotFoundError:
            raise Unavailable("git is not installed on this node") from None
        if check and done.returncode != 0:
            raise Unavailable(f"git {args[0]} failed: {_last_line(done.stderr)}")
        return done

    def head(self) -> str:
        return self._git("rev-parse", "--verify", "--end-of-options", "HEAD").stdout.strip()

    def dirty(self) -> bool:
        # Untracked files never block a fast-forward git would refuse anyway, so only tracked changes count.
        return bool(self._git("status", "--porcelain", "--untracked-files=no").stdout.strip())

    def _tracking(self, branch: str) -> str:
        return f"refs/remotes/{self.remote}/{branch}"

    def _fetch(self, branch: str) -> None:
        with self._fetching:
            done = self._git("fetch", "--quiet", "--no-tags", "--end-of-options", self.remote,
                             f"+refs/heads/{branch}:{self._tracking(branch)}", check=False)
        if done.returncode != 0:
            if "couldn't find remote ref" in done.stderr:
                raise NotFound(f"branch {branch!r} does not exist on {self.remote}", ref=branch)
            raise Unavailable(f"git fetch from {self.remote} failed: {_last_line(done.stderr)}")

    def _fetch_all(self) -> None:
        with self._fetching:
            self._git("fetch", "--quiet", "--no-tags", "--end-of-options", self.remote)

    def _exists(self, ref: str) -> bool:
        return self._git("cat-file", "-e", "--end-of-options", f"{ref}^{{commit}}", check=False).returncode == 0

    def _fetched_at(self) -> float | None:
        fetch_head = self._git("rev-parse", "--git-path", "FETCH_HEAD").stdout.strip()
        path = Path(fetch_head) if os.path.isabs(fetch_head) else self.path / fetch_head
        return path.stat().st_mtime if path.exists() else None

    def status(self, fetch: bool = True) -> GitStatus:
        error = None
        if fetch:
            try:
                self._fetch(self.branch)
            except (Unavailable, NotFound) as exc:
                error = exc.message
        symbolic = self._git("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        upstream = self._tracking(self.branch)
        behind = ahead = None
        if self._exists(upstream):
            counts = self._git("rev-list", "--left-right", "--count", "--end-of-options", f"HEAD...{upstream}")
            ahead, behind = (int(n) for n in counts.stdout.split())
        return GitStatus(branch=symbolic.stdout.strip() if symbolic.returncode == 0 else None, commit=self.head(),
                         dirty=self.dirty(), behind=behind, ahead=ahead, upstream=f"{self.remote}/{self.branch}",
                         fetched_at=self._fetched_at(), error=error)

    def update(self, ref: str | None = None) -> dict[str, Any]:
        """Fast-forward HEAD to `ref` (default: the configured branch) as it is on the remote.

        The checked-out branch stays the same; only a fast-forward is ever made (never a merge
        commit, never a reset), so local commits are never lost: a diverged target is a 409.
        """
        target = check_ref(ref) if ref is not None else self.branch
        if not self._updating.acquire(blocking=False):
            raise Conflict("a git update is already running on this node")
        try:
            if self.dirty():
                raise Conflict("the checkout has uncommitted changes; refusing to update", path=str(self.path))
            previous = self.head()
            if HEX_COMMIT.fullmatch(target):
                self._fetch_all()
                if not self._exists(target):
                    raise NotFound(f"commit {target} is not on {self.remote}", ref=target)
                rev = target
            else:
                self._fetch(target)
                rev = self._tracking(target)
            if self._git("merge-base", "--is-ancestor", "--end-of-options", "HEAD", rev, check=False).returncode != 0:
                raise Conflict(f"{target} is not a fast-forward of {previous[:12]}; refusing to update", ref=target)
            merged = self._git("merge", "--ff-only", "--quiet", "--end-of-options", rev, check=False)
            if merged.returncode != 0:
                raise Conflict(f"git refused the fast-forward: {_last_line(merged.stderr)}", ref=target)
            current = self.head()
        finally:
            self._updating.release()
        return {"previous_commit": previous, "current_commit": current, "ref": target, "updated": current != previous}


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "no message"
