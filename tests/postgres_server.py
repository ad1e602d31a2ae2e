"""Run Debian's PostgreSQL for tests: ``initdb`` into a temporary data directory, ``pg_ctl
start`` listening on 127.0.0.1 at a free port (no Unix socket outside the data directory),
stopped by the postmaster's PID. The server refuses to run as root, so when the tests run as
root it runs as the ``postgres`` user the Debian package creates (``runuser``)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from registry_server import free_port


def pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A throwaway PostgreSQL cluster; ``url(db)`` for SQLAlchemy-free connection strings."""

    def __init__(self) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="modelseal-pg-"))
        self.datadir = self.root / "data"
        self.user: str | None = "postgres" if os.getuid() == 0 else None
        self.pid: int | None = None

    def _run(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        cmd = [str(a) for a in argv]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, check=True, timeout=120)

    def start(self, timeout: float = 30.0) -> None:
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chmod(self.root, 0o700)
        self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -F "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-o", opts,
                  "-l", str(self.root / "log"), "-w", "-t", str(int(timeout)), "start")
        pidfile = self.datadir / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not pidfile.exists():
            time.sleep(0.05)
        self.pid = int(pidfile.read_text().splitlines()[0])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh database; its URL."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of the postmaster by PID; SIGKILL if it lingers."""
        pid, self.pid = self.pid, None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGINT)
                for _ in range(200):
                    os.kill(pid, 0)
                    time.sleep(0.05)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
