"""``make demo`` and ``make ui`` as a newcomer runs them: the commands the demo prints run as
printed, the stop stops, and the UI target serves the deployments with the block types known."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.helpers import stop, wait_for

ROOT = Path(__file__).resolve().parents[1]


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TENANT_BACKUP_"))}
    env["PREFECT_HOME"] = str(folder / "prefect-home")  # no Prefect API anywhere
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The demo, run once in a folder of its own: the folder and what it printed."""
    folder = tmp_path_factory.mktemp("demo")
    done = subprocess.run(
        [sys.executable, "-m", "tenant_backup.demo.run", "--folder", str(folder), "--rows", "300"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(folder),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    try:
        yield folder, done.stdout
    finally:
        subprocess.run([sys.executable, "-m", "tenant_backup.demo.run", "--folder", str(folder), "--stop"], cwd=ROOT)


def test_the_commands_the_demo_prints_run_as_printed(demo: tuple[Path, str]) -> None:
    folder, printed = demo
    names = re.findall(r"^  (.+): [\d,]+ rows in \d+ tables", printed, re.MULTILINE)
    assert len(names) == 3 and len(set(names)) == 3  # three tenants a person tells apart
    command = re.compile(r"(uv run tenant-backup|\S*/tenant-backup|\S+ -m tenant_backup\.cli) .*$")
    commands = [m.group(0) for line in printed.splitlines() if (m := command.search(line))]
    assert len(commands) >= 6, printed
    for command in commands:
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, cwd=ROOT, env=_env(folder), timeout=120
        )
        assert done.returncode == 0, f"{command}\n{done.stderr}"


def test_the_demo_stop_stops_the_database(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    run = [sys.executable, "-m", "tenant_backup.demo.run", "--folder", str(folder), "--rows", "50"]
    assert subprocess.run(run, capture_output=True, cwd=ROOT, env=_env(folder), timeout=300).returncode == 0
    pid = int((folder / "pg" / "postmaster.pid").read_text().split("\n", 1)[0])
    stopped = subprocess.run([*run, "--stop"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert stopped.stdout.startswith("stopped the demo database") and not (folder / "pg" / "postmaster.pid").exists()
    assert (
        not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    )
    again = subprocess.run([*run, "--stop"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "is not running" in again.stdout


def test_make_ui_serves_the_deployments_with_the_block_types_registered(demo: tuple[Path, str]) -> None:
    folder, _ = demo
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "tenant_backup.demo.ui", "--folder", str(folder), "--port", str(port)],
        cwd=ROOT,
        env=_env(folder),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(
            "the served deployments",
            lambda: httpx.get(f"{api}/deployments/name/restore-backup/restore-now", timeout=2).status_code == 200,
            timeout=180,
        )
        kinds = httpx.post(f"{api}/block_types/filter", json={}, timeout=5).json()
        assert {"tenant-backup-database", "tenant-backup-storage"} <= {k["slug"] for k in kinds}
        block = httpx.get(f"{api}/block_types/slug/tenant-backup-storage/block_documents/name/demo", timeout=5)
        assert block.status_code == 200
        settings = httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=5).json()
        assert settings["api_url"] == api  # the UI's browser side talks to this port, not 4200
    finally:
        stop(ui)
