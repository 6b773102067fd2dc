"""Git operations against a local bare repository as the remote (real git, no shell)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.errors import BadRequest, Conflict, NotFound
from orchestrator.ops.git import GitRepo, check_ref

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@example.invalid"}
BAD_REFS = ["--upload-pack=touch pwned", "main;id", "$(id)", "-main", "main id", "main..other", "a/../b", "`id`",
            "main|id", "HEAD~1", "main@{0}", "x.lock", "refs/heads/", "", "a" * 300, "main\n"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_IDENTITY}).stdout.strip()


def commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"change {name}")
    return git(repo, "rev-parse", "HEAD")


def make_origin(tmp_path: Path) -> tuple[Path, Path]:
    """A bare remote with one commit on main, and a working clone that pushes to it."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    author = tmp_path / "author"
    git(tmp_path, "clone", "-q", str(remote), str(author))
    git(author, "checkout", "-q", "-b", "main")
    commit(author, "app.py", "v1\n")
    git(author, "push", "-q", "origin", "main")
    return remote, author


def deployed(tmp_path: Path, remote: Path, name: str = "deployed") -> Path:
    path = tmp_path / name
    git(tmp_path, "clone", "-q", "-b", "main", str(remote), str(path))
    return path


@pytest.fixture
def origin(tmp_path):
    return make_origin(tmp_path)


@pytest.mark.parametrize("ref", BAD_REFS)
def test_refs_that_are_not_plain_branches_or_commits_are_refused(ref):
    with pytest.raises(BadRequest) as refused:
        check_ref(ref)
    assert refused.value.extra["field"] == "ref"


def test_plain_branches_and_hex_commits_pass():
    assert check_ref("main") == "main"
    assert check_ref("release/v1.2_rc-3") == "release/v1.2_rc-3"
    assert check_ref("A" * 40) == "a" * 40


def test_status_reports_behind_ahead_and_dirty(tmp_path, origin):
    remote, author = origin
    checkout = deployed(tmp_path, remote)
    repo = GitRepo(checkout, timeout_s=20)
    clean = repo.status()
    assert (clean.branch, clean.dirty, clean.behind, clean.ahead, clean.error) == ("main", False, 0, 0, None)
    commit(author, "app.py", "v2\n")
    commit(author, "lib.py", "x\n")
    git(author, "push", "-q", "origin", "main")
    commit(checkout, "local.py", "mine\n")
    (checkout / "app.py").write_text("edited\n")
    state = repo.status()
    assert (state.behind, state.ahead, state.dirty) == (2, 1, True)
    assert state.fetched_at is not None and state.commit == git(checkout, "rev-parse", "HEAD")


def test_offline_status_keeps_the_last_known_numbers_and_says_why(tmp_path, origin):
    remote, author = origin
    checkout = deployed(tmp_path, remote)
    repo = GitRepo(checkout, timeout_s=20)
    commit(author, "app.py", "v2\n")
    git(author, "push", "-q", "origin", "main")
    assert repo.status().behind == 1
    git(checkout, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    offline = repo.status()
    assert offline.behind == 1 and offline.ahead == 0, "numbers from the last fetch that worked"
    assert offline.error and "fetch" in offline.error


def test_update_fast_forwards_to_the_branch_then_to_a_commit(tmp_path, origin):
    remote, author = origin
    checkout = deployed(tmp_path, remote)
    repo = GitRepo(checkout, timeout_s=20)
    before = git(checkout, "rev-parse", "HEAD")
    v2 = commit(author, "app.py", "v2\n")
    v3 = commit(author, "app.py", "v3\n")
    git(author, "push", "-q", "origin", "main")
    git(author, "push", "-q", "origin", f"{v2}:refs/heads/pinned")
    to_v2 = repo.update("pinned")
    assert (to_v2["previous_commit"], to_v2["current_commit"], to_v2["updated"]) == (before, v2, True)
    to_v3 = repo.update(v3.upper())
    assert to_v3["current_commit"] == v3 and (checkout / "app.py").read_text() == "v3\n"
    again = repo.update()
    assert again["updated"] is False and again["current_commit"] == v3
    assert git(checkout, "symbolic-ref", "--short", "HEAD") == "main", "the checked-out branch never changes"


def test_update_refuses_a_dirty_tree_and_a_diverged_target(tmp_path, origin):
    remote, author = origin
    checkout = deployed(tmp_path, remote)
    repo = GitRepo(checkout, timeout_s=20)
    commit(author, "app.py", "v2\n")
    git(author, "push", "-q", "origin", "main")
    (checkout / "app.py").write_text("hand edit\n")
    with pytest.raises(Conflict, match="uncommitted"):
        repo.update()
    git(checkout, "checkout", "-q", "--", "app.py")
    mine = commit(checkout, "local.py", "mine\n")
    with pytest.raises(Conflict, match="not a fast-forward"):
        repo.update()
    assert git(checkout, "rev-parse", "HEAD") == mine, "a refused update leaves HEAD where it was"


def test_unknown_branch_or_commit_is_not_found(tmp_path, origin):
    remote, _ = origin
    repo = GitRepo(deployed(tmp_path, remote), timeout_s=20)
    with pytest.raises(NotFound):
        repo.update("no-such-branch")
    with pytest.raises(NotFound):
        repo.update("0" * 40)


def test_hostile_refs_never_reach_git(tmp_path, origin):
    remote, _ = origin
    checkout = deployed(tmp_path, remote)
    repo = GitRepo(checkout, timeout_s=20)
    head = git(checkout, "rev-parse", "HEAD")
    for ref in ("--upload-pack=touch pwned", f"$(touch {tmp_path}/pwned)", "main;touch pwned"):
        with pytest.raises(BadRequest):
            repo.update(ref)
    assert not list(tmp_path.rglob("pwned")) and not list(Path.cwd().glob("pwned"))
    assert git(checkout, "rev-parse", "HEAD") == head


def test_restart_reexecutes_the_process_with_the_same_arguments(tmp_path):
    """What the launcher does after an update: stop serving, then exec itself again."""
    marks = tmp_path / "runs"
    script = tmp_path / "launcher.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from orchestrator.ops import restart
        marks = open({str(marks)!r}, "a"); marks.write(" ".join(sys.argv[1:]) + "\\n"); marks.close()
        if open({str(marks)!r}).read().count("\\n") == 1:
            stopped = []
            restart.install(lambda: stopped.append(True))
            assert restart.request() and stopped == [True]
            restart.exec_if_requested()
            raise SystemExit("exec_if_requested returned")
    """))
    subprocess.run([sys.executable, str(script), "--port", "1234"], check=True, timeout=60)
    assert marks.read_text().splitlines() == ["--port 1234", "--port 1234"]


def test_no_launcher_means_no_restart():
    from orchestrator.ops import restart
    assert restart.available() is False and restart.request() is False
