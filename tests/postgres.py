"""A real PostgreSQL server for tests, on 127.0.0.1 TCP in a temporary folder.

    (registered for every test module by tests/conftest.py: pytest_plugins = ("postgres",))

    def test_x(postgres_url):               # 'postgresql+psycopg2://postgres@127.0.0.1:PORT/harness_test'
        optuna.storages.RDBStorage(postgres_url)

`running_postgres()` is the same server as a context manager, for use outside fixtures.
The binaries are the ones bundled in the pip package `pgserver` (else initdb/pg_ctl on PATH); we run
them ourselves because pgserver's own server listens on a unix socket only. PostgreSQL refuses to run
as root, so under root the server runs as the unprivileged user `nobody`.
"""
from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

DATABASE = "harness_test"
START_ATTEMPTS = 3  # a free port can be taken between our probe and postgres binding it


class PostgresUnavailable(Exception):
    """The PostgreSQL binaries are missing or cannot run here (the tests that need them skip)."""


def postgres_bindir() -> Path:
    """pgserver's bundled binaries, else the folder of pg_ctl on PATH."""
    spec = importlib.util.find_spec("pgserver")  # its folder only: importing it starts lock files
    candidates = [Path(spec.origin).parent / "pginstall" / "bin"] if spec and spec.origin else []
    if shutil.which("pg_ctl"):
        candidates.append(Path(shutil.which("pg_ctl")).resolve().parent)
    for bindir in candidates:
        if all((bindir / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres", "createdb")):
            return bindir
    raise PostgresUnavailable("no PostgreSQL binaries: pip install pgserver (bundles them), or put pg_ctl on PATH")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """initdb + pg_ctl in one temporary folder; `stop` removes it."""

    def __init__(self):
        self.bindir = postgres_bindir()
        self.as_user, owner = {}, None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("nobody")
            except KeyError:
                raise PostgresUnavailable("running as root and no 'nobody' user to run PostgreSQL as") from None
            self.as_user = dict(user=owner.pw_uid, group=owner.pw_gid, extra_groups=[])
        self.root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
        if owner:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = None
        self.url = ""

    def _run(self, exe: str, *args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([str(self.bindir / exe), *args], cwd=self.root, capture_output=True, text=True,
                                  timeout=60, stdin=subprocess.DEVNULL, **self.as_user)
        except OSError as exc:  # not executable here (permissions, architecture, missing libraries)
            raise PostgresUnavailable(f"{self.bindir / exe} cannot run: {exc}") from None

    def start(self) -> str:
        init = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                         "--locale=C", "--no-sync")
        if init.returncode:
            if "error while loading shared libraries" in init.stderr:
                raise PostgresUnavailable(f"initdb cannot run: {init.stderr.strip().splitlines()[-1]}")
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        for _ in range(START_ATTEMPTS):
            self.port = _free_port()
            # -h: TCP on loopback only; -k: the unix socket in our folder, not /var/run; -F: no fsync (tests)
            options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -F"
            started = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                                "start")
            if started.returncode == 0:
                break
            log = self.log.read_text() if self.log.is_file() else ""
            if "could not bind" not in log and "already in use" not in log:
                raise RuntimeError(f"pg_ctl start failed:\n{started.stdout}\n{started.stderr}\n{log}")
        else:
            raise RuntimeError(f"pg_ctl start: no free port after {START_ATTEMPTS} attempts")
        created = self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", DATABASE)
        if created.returncode:
            self.stop()
            raise RuntimeError(f"createdb failed: {created.stderr.strip()}")
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{DATABASE}"
        return self.url

    def stop(self):
        if (self.data / "postmaster.pid").is_file():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> _Server:
    """A started server (`.url`, `.stop()`); nothing is left behind if it fails to start."""
    server = _Server()
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def running_postgres() -> Iterator[str]:
    """Start a server, yield its SQLAlchemy URL, stop it and delete its folder."""
    server = start_postgres()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL server for this test module; skips if PostgreSQL cannot run."""
    pytest.importorskip("psycopg2", reason="psycopg2-binary is needed to talk to PostgreSQL")
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    yield server.url
    server.stop()
