"""A throw-away PostgreSQL server for the tests that use one (Debian's `postgresql`, installed by
`make postgres`, best effort like the browser): on a Unix socket in a temporary folder, stopped at
the end. Where it cannot start, the test skips and says why."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a SQLAlchemy URL (postgresql+psycopg) of a fresh server's `postgres` database."""
    pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver) is not installed")
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    if not found:
        pytest.skip("no PostgreSQL server here (`make postgres` installs Debian's postgresql)")
    bin_dir = Path(found).resolve().parent
    if not (bin_dir / "pg_ctl").exists():
        bin_dir = Path(next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"))), str(bin_dir)))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # the server refuses root
    tmp = Path(tempfile.mkdtemp(prefix="runassist-pg-", dir="/tmp"))
    tmp.chmod(0o777)
    data, sock = tmp / "data", tmp / "sock"
    sock.mkdir()
    sock.chmod(0o777)
    port = _free_port()
    ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        init = subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "runassist"],
                              capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            pytest.skip(f"PostgreSQL's initdb failed here: {init.stderr.strip()[-300:]}")
        start = subprocess.run([*ctl, "-w", "-l", str(tmp / "server.log"), "-o",
                                f"-p {port} -k {sock} -c listen_addresses=''", "start"],
                               capture_output=True, text=True, timeout=120)
        if start.returncode != 0:
            log = (tmp / "server.log").read_text() if (tmp / "server.log").exists() else start.stderr
            pytest.skip(f"PostgreSQL would not start here: {log.strip()[-300:]}")
        yield f"postgresql+psycopg://runassist@/postgres?host={sock}&port={port}"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
