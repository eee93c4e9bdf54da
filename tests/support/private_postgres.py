"""A private PostgreSQL server for tests that stop, crash or restart the database.

The shared server on 127.0.0.1:5432 serves every other test and developer session; a fault test
that restarted it would break their work. This one is a cluster of its own: ``initdb`` into a
temporary folder with Debian's binaries (/usr/lib/postgresql/<newest>/bin), started with
``pg_ctl`` on a free loopback port, with a ``promptpulse`` role owning a ``promptpulse``
database. Data survives ``stop`` + ``start`` (and ``crash`` + ``start``, through WAL recovery),
as a real server's would.

PostgreSQL refuses to run as root, and CI runs as root: then every command runs as the
``postgres`` user (``runuser``), and the folder lives directly under the system temporary
directory (pytest's own folders are private to root) and belongs to that user.

``fsync=off`` makes it faster; it only matters for an operating-system crash, never for a
server process that stops or dies, which is what the tests do. ``synchronous_commit`` keeps
its default: a commit is on disk (in the OS cache) before the client hears of it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin: apt-get install postgresql")
    return Path(found[-1]).parent


class PrivatePostgres:
    user = "promptpulse"
    password = "promptpulse"  # noqa: S105  (a throwaway local cluster)
    database = "promptpulse"

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="pp-private-pg-", dir="/tmp" if self.as_postgres else None))
        self.data = self.dir / "data"
        self.log_file = self.dir / "postgres.log"
        if self.as_postgres:
            account = pwd.getpwnam("postgres")
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        self._initialised = False

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(self.bin / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({result.returncode}): "
                               f"{result.stderr.strip() or result.stdout.strip()}\n{self.log_tail()}")
        return result

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def _psql(self, sql: str) -> None:
        self._run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "postgres", "-d", "postgres", "-c", sql)

    def start(self) -> None:
        """Start (initialising the cluster the first time); returns once it accepts connections."""
        if not self._initialised:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                      "--no-instructions")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
                   "-c fsync=off -c shared_buffers=32MB -c max_connections=100")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-o", options, "-w", "-t", "90", "start")
        if not self._initialised:
            self._psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
            self._psql(f"CREATE DATABASE {self.database} OWNER {self.user}")
            self._initialised = True

    def stop(self) -> None:
        """Clean shutdown (``-m fast``: open sessions are ended, a checkpoint is written)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def crash(self) -> None:
        """``-m immediate``: every server process quits at once, no checkpoint; the next start
        recovers from the WAL, as after a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        """Stop (if running) and delete the cluster."""
        if self.pid() is not None:
            try:
                self.crash()
            except RuntimeError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
