"""What a run killed with ``kill -9`` leaves in its spool folder, and who removes it: real
processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tenant_backup.spool import spool_dir, sweep
from tests.helpers import stop

ROOT = Path(__file__).resolve().parent.parent


def _start(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    """A ``tests.killable`` process, once it says it is half-way; returns it and what it said."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.killable", *args], cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    assert line, f"tests.killable {args[0]} exited with {proc.wait()} before it was ready"
    return proc, line


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def test_a_killed_runs_spool_folder_is_removed_by_the_next_run_and_a_live_runs_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    live, live_folder = _start("spool", "backup", str(root))
    dead, dead_folder = _start("spool", "restore", str(root))
    legacy = root / "tenant-verify-abcd1234"  # made before folders had a lock: left alone
    legacy.mkdir()
    try:
        _kill(dead)
        assert Path(dead_folder, ".lock").is_file()  # kill -9: nothing of the run's own clean-up ran
        with spool_dir("verify", root) as mine:
            assert not Path(dead_folder).exists() and Path(live_folder).is_dir() and Path(mine).is_dir()
            assert sweep(root) == []  # neither the live run's folder nor this one
        assert not Path(mine).exists()
        _kill(live)
        assert sweep(root) == [live_folder] and legacy.is_dir()
    finally:
        stop(live, dead)
