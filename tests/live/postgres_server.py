"""A real, throw-away PostgreSQL server for the tests (Debian's `postgresql` package).

`.ci/run` installs the package; the server itself is started here, in a temporary
folder, on a free loopback port, with trust authentication, and stopped at the end of
the session. Without the package the PostgreSQL tests are skipped on a developer's
machine, and fail under CI (CI=true), so the suite can never pass without them there.
"""

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile

import pytest


def _bindir() -> str | None:
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self):
        bindir = _bindir()
        if bindir is None:
            message = ("PostgreSQL is not installed (initdb not found): install Debian's "
                       "postgresql package, as .ci/run does.")
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.bindir = bindir
        self.root = tempfile.mkdtemp(prefix="tlc-pg-")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        self.port = _free_port()
        # PostgreSQL refuses to run as root: run it as the package's `postgres` user.
        self.prefix = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", self.data, "-U", "tlc", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-w",
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.root} -F "
                        f"-c max_connections=200", "start")
        self._names = itertools.count()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.prefix, os.path.join(self.bindir, tool), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://tlc@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; returns its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=tlc dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self.prefix, os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                        "-m", "immediate", "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
