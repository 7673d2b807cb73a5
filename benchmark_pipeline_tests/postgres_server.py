"""A real PostgreSQL server for the deployment tests (Dagster storage, MLflow backend store, Optuna storages).

:class:`PostgresServer` runs Debian's ``postgresql`` binaries: ``initdb`` into a fresh temporary folder, then
``pg_ctl start`` on a free port on 127.0.0.1 (no Unix socket outside that folder), ``trust`` authentication for
the ``postgres`` role, and every connection logged (``log_connections``) so tests can count the connections a
piece of code opened. PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user
the Debian package creates; otherwise as the current user.

``make test`` installs the package when it is missing and the user is root (see the Makefile's ``postgres``
target); where neither holds, :func:`postgres_unavailable_reason` says what to install and the tests skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

#: Seconds ``pg_ctl`` waits for the server to accept connections.
POSTGRES_STARTUP_TIMEOUT_S = 60
#: Enough for a Dagster instance, an MLflow server and a few Optuna workers at once; deliberately not the
#: default 100, so that a connection leak shows up as ``too many clients`` instead of passing unnoticed.
POSTGRES_MAX_CONNECTIONS = 60


def postgres_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: Debian's ``/usr/lib/postgresql/<major>/bin`` (the
    newest), else wherever ``initdb`` is on the ``PATH``; ``None`` when PostgreSQL is not installed."""
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if debian:
        return Path(debian[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def postgres_unavailable_reason() -> str | None:
    """Why no server can be started here (a sentence saying what to install), or ``None`` when one can."""
    if postgres_bin_dir() is None:
        return (
            "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH): install the Debian "
            "package `postgresql` (`apt-get install postgresql`; `make test` does it when run as root)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no `postgres` user to run the server as (the Debian package `postgresql` creates it)"
    return None


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, on ``127.0.0.1:<port>``; ``stop()`` removes it all."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bin_dir = postgres_bin_dir()
        if self.bin_dir is None:
            raise RuntimeError(postgres_unavailable_reason() or "PostgreSQL is not installed")
        # Not under pytest's tmp dirs: those are 0700 and owned by root, which the postgres user cannot enter.
        self.base = Path(tempfile.mkdtemp(prefix="bp-postgres-"))
        self.data_dir = self.base / "data"
        self.log_path = self.base / "server.log"
        self._run_as = None
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self._run_as = "postgres"

    def _command(self, *args: str) -> list[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        return ["runuser", "-u", self._run_as, "--", *command] if self._run_as else command

    def start(self) -> None:
        subprocess.run(
            self._command("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"),
            check=True, capture_output=True, cwd=self.base,
        )  # fmt: skip
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.base}",
                f"-c max_connections={POSTGRES_MAX_CONNECTIONS}",
                "-c log_connections=on",
                # A test cluster: durability is not what is tested, and fsync costs seconds on loaded CI disks.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        result = subprocess.run(
            self._command("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w", "-t", str(POSTGRES_STARTUP_TIMEOUT_S), "start"),
            capture_output=True, text=True, cwd=self.base,
        )  # fmt: skip
        if result.returncode != 0:
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
            self.stop()
            raise RuntimeError(f"pg_ctl start failed ({result.returncode}): {result.stderr.strip()}\n{tail}")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                self._command("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"),
                capture_output=True,
                cwd=self.base,
            )
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres", driver: str = "postgresql") -> str:
        """A SQLAlchemy URL as users write it (``postgresql://``: SQLAlchemy 2.1 picks psycopg 3)."""
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database, autocommit=True)

    def create_database(self, prefix: str = "db") -> str:
        """A new, empty database; returns its name (unique, so tests sharing the server never meet)."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with self.connect() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name

    def connections_to(self, database: str) -> int:
        """Connections open to ``database`` right now (``pg_stat_activity``), this query's own excluded."""
        with self.connect() as connection:
            row = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
            ).fetchone()
        return int(row[0])

    def log_offset(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def connections_opened(self, database: str, since_offset: int = 0) -> int:
        """Connections authorized to ``database`` since ``since_offset`` of the server log (``log_connections``):
        every connection ever opened, however short-lived, which a ``pg_stat_activity`` snapshot may miss."""
        # The server writes its log asynchronously; give the last lines a moment to land.
        time.sleep(0.3)
        with open(self.log_path, "rb") as log:
            log.seek(since_offset)
            text = log.read().decode(errors="replace")
        return len(re.findall(rf"connection authorized: user=\S+ database={re.escape(database)}\b", text))
