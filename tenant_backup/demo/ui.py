"""``make ui``: the demo in the Prefect UI. It starts a Prefect server with its UI on a chosen port
(its data under ``.demo/prefect``), registers the block types and saves two blocks that point at
the demo database and storage (``demo``), then serves every deployment from this process, until
Ctrl-C. Runs started from the UI, by the app through the API, or by the CLI with
``PREFECT_API_URL`` set, all show up there.

A production server keeps its data in PostgreSQL, not SQLite (SQLite answers "database is locked"
under load): ``PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://…``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the Prefect server stopped (exit {process.returncode}); see its output above")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the Prefect server did not answer {url} within {seconds:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=4200, help="the UI's and API's port (default 4200)")
    parser.add_argument("--folder", default=".demo", help="where the demo lives (make demo)")
    args = parser.parse_args(argv)
    folder = Path(args.folder).resolve()
    from tenant_backup.demo.run import cli_command, prepare

    url, storage = prepare(folder, 20_000)
    api = f"http://127.0.0.1:{args.port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(folder / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,  # the UI's browser side calls the API here (off the default port too)
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(args.port)],
        env={k: v for k, v in env.items() if k != "PREFECT_API_URL"},
    )

    def stop(signum: int, frame: object) -> None:  # `kill`: stop the server too, not only this process
        server.terminate()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        print(f"starting a Prefect server on port {args.port} (its first start sets up its database) ...", flush=True)
        _wait_for(f"{api}/health", server)
        os.environ.update({k: env[k] for k in ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED")})
        from blocks import BackupStorage, TenantDatabase
        from deployments import register_block_types, serve_all

        register_block_types()
        TenantDatabase(url=url).save("demo", overwrite=True)
        BackupStorage(url=storage).save("demo", overwrite=True)
        print(
            f"""
the Prefect UI:   http://127.0.0.1:{args.port}
blocks:           tenant-backup-database/demo and tenant-backup-storage/demo (the demo's database and storage)
from a terminal:  export PREFECT_API_URL={api}
                  {cli_command()} backup --db '{url}' --storage {storage} --tenant <id> --force
                  (the run shows up in the UI; `{cli_command()} list --db '{url}'` lists the backups)
serving every deployment now (Ctrl-C stops them and the server) ...""",
            flush=True,
        )
        serve_all()
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
