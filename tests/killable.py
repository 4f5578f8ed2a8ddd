"""A process for the tests to kill with ``kill -9``: it gets half-way through what a run does,
says so on stdout, and waits to be killed.

    python -m tests.killable spool <kind> <root>            # inside spool_dir(kind, root)
    python -m tests.killable write <url> <options> <key> <bytes> [flush]
        # inside Storage(url, options).write_atomic(key), after writing <bytes> bytes; with
        # `flush`, after the bytes are in storage too (the upload finished, the move not done)
"""

from __future__ import annotations

import json
import sys
import time

from fsspec.spec import AbstractBufferedFile

from tenant_backup.spool import spool_dir
from tenant_backup.storage import Storage


def _ready(what: str) -> None:
    print(what, flush=True)
    time.sleep(600)  # until killed
    raise SystemExit("not killed within 600 s")


def main(argv: list[str]) -> None:
    if argv[0] == "spool":
        with spool_dir(argv[1], argv[2]) as folder:  # type: ignore[arg-type]
            _ready(folder)
    _, url, options, key, size, *flush = argv
    with Storage(url, json.loads(options)).write_atomic(key) as out:
        out.write(b"x" * int(size))
        if flush and isinstance(out, AbstractBufferedFile):  # s3fs: upload now, as close() does
            out.flush(force=True)
        elif flush:
            out.flush()
        _ready("written")


if __name__ == "__main__":
    main(sys.argv[1:])
