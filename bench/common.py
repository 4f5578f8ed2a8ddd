"""What every benchmark needs: a database with the 3 M-row tenant, a Prefect server, timing."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tenant_backup.demo.generate import load_demo, tenant_uuid

BENCH_DB = os.environ.get("BENCH_DB", "tenant_backup_bench")
BIG_ROWS = int(os.environ.get("BENCH_ROWS", "3000000"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
FOLDER = Path(os.environ.get("BENCH_FOLDER", ".bench")).resolve()


def server_url() -> str:
    """TEST_DATABASE_URL, else 127.0.0.1:5432, else an embedded server under .bench/pg."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        return url
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        with psycopg.connect(local, connect_timeout=3):
            return local
    except psycopg.Error:
        import pgserver

        FOLDER.mkdir(parents=True, exist_ok=True)
        return str(pgserver.get_server(FOLDER / "pg", cleanup_mode="stop").get_uri())


def compiled() -> None:
    """Byte-compile the project and its packages once, as an installed tool is: a machine with
    PYTHONDONTWRITEBYTECODE set would otherwise compile every module in every timed process."""
    import compileall

    for folder in ("tenant_backup", "flows", "tasks", "blocks", "deployments", *sys.path):
        if folder and Path(folder).is_dir() and ("site-packages" in folder or not Path(folder).is_absolute()):
            compileall.compile_dir(folder, quiet=1, workers=2)


def bench_database() -> tuple[str, str]:
    """The benchmark database (created and loaded once, then reused) and its big tenant's id."""
    compiled()
    base = server_url()
    url = urlunsplit(urlsplit(base)._replace(path=f"/{BENCH_DB}"))
    with psycopg.connect(base, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    tenant = tenant_uuid("pos", 0)
    with psycopg.connect(url, autocommit=True) as conn:
        marker = (
            conn.execute("SELECT obj_description('public.etablissements'::regclass)").fetchone()
            if conn.execute("SELECT to_regclass('public.etablissements')").fetchone() != (None,)
            else None
        )
        if marker is None or marker[0] != f"bench rows={BIG_ROWS}":
            print(f"loading the POS schema: one tenant of {BIG_ROWS:,} rows and two small ones (once) ...", flush=True)
            conn.execute(
                "DROP SCHEMA IF EXISTS public CASCADE; DROP SCHEMA IF EXISTS tenant_backup CASCADE;"
                " CREATE SCHEMA public"
            )
            started = time.perf_counter()
            load_demo(conn, "pos", 3, 2_000, first_rows=BIG_ROWS)
            conn.execute(sql.SQL("COMMENT ON TABLE etablissements IS {}").format(sql.Literal(f"bench rows={BIG_ROWS}")))
            conn.execute("VACUUM ANALYZE")
            print(f"  loaded in {time.perf_counter() - started:.0f} s", flush=True)
    return url, tenant


def demo_database(name: str, tenants: int, rows: int) -> str:
    """A database of ``tenants`` POS tenants of about ``rows`` rows each (loaded once, then reused)."""
    base = server_url()
    url = urlunsplit(urlsplit(base)._replace(path=f"/{name}"))
    with psycopg.connect(base, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return url
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(url, autocommit=True) as conn:
        print(f"loading {tenants:,} POS tenants of ~{rows:,} rows into {name} (once) ...", flush=True)
        load_demo(conn, "pos", tenants, rows)
        conn.execute("VACUUM ANALYZE")
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def prefect_server(database_url: str | None = None) -> Iterator[dict[str, str]]:
    """``prefect server start`` on loopback with its own home (its database SQLite there, or
    ``database_url``: ``postgresql+asyncpg://…``); yields the environment to reach it, with the
    server's pid as ``BENCH_SERVER_PID``."""
    home = Path(tempfile.mkdtemp(prefix="tb-bench-prefect-"))
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    if database_url:
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("prefect server did not start") from None
                time.sleep(0.5)
        yield {**env, "BENCH_SERVER_PID": str(proc.pid)}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Timing:
    name: str
    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    note: str = ""

    def add(self, seconds: float, peak_rss_mb: float) -> None:
        self.seconds.append(seconds)
        self.peak_rss_mb.append(peak_rss_mb)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def peak(self) -> float:
        return max(self.peak_rss_mb) if self.peak_rss_mb else 0.0


def peak_rss_of(cmd: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run a whole process; return wall seconds, its own peak RSS in MB (os.wait4), its stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, out.decode()


def tree_peak_rss_mb(pid: int) -> float:
    """The largest peak RSS (VmHWM) of a process and its children, in MB (Linux /proc)."""
    peak = 0.0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if status.parent.name == str(pid) or fields.get("PPid", "").strip() == str(pid):
            peak = max(peak, int(fields.get("VmHWM", "0 kB").split()[0]) / 1024)
    return peak


@dataclass
class Goal:
    """One goal of an issue: a measured value against its limit. ``established`` goals were met
    before, so missing one is a regression and fails ``make bench``; the others are reported."""

    name: str
    value: float
    limit: float
    unit: str = ""
    established: bool = True

    @property
    def met(self) -> bool:
        return self.value <= self.limit


def report_goals(goals: list[Goal]) -> bool:
    """Print every goal, met or not; False when an established goal was missed."""
    print(f"\n{'goal':<62}{'measured':>10}{'limit':>9}")
    for g in goals:
        verdict = "met" if g.met else ("NOT MET (regression)" if g.established else "not met yet")
        print(f"{g.name:<62}{g.value:>9.2f}{g.unit:<1}{g.limit:>8.2f}{g.unit:<1}  {verdict}")
    regressions = [g.name for g in goals if g.established and not g.met]
    print("goals met" if not regressions else f"REGRESSION: {', '.join(regressions)}")
    return not regressions


def report(rows: list[Timing], baseline: Timing) -> None:
    print(f"\n{'':<48}{'median s':>10}{'× baseline':>12}{'peak RSS MB':>13}   runs")
    for t in rows:
        runs = " ".join(f"{s:.2f}" for s in t.seconds)
        print(f"{t.name:<48}{t.median:>10.2f}{t.median / baseline.median:>12.2f}{t.peak:>13.0f}   {runs}  {t.note}")
