"""A throwaway PostgreSQL server for the tests of a PostgreSQL gradebook (the `postgres`
session fixture of tests/conftest.py): initdb, then the postmaster as a child of the test session
that dies with it (as a non-root user, since PostgreSQL refuses to run as root), on a free
localhost port in a temporary directory; every test makes a fresh database in it."""

from __future__ import annotations

import glob
import os
import pathlib
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest


def _postgres_bin() -> pathlib.Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return pathlib.Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return pathlib.Path(initdb).parent if initdb else None


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as (PostgreSQL refuses root): ourselves, or, as root, the
    distribution's postgres account, else nobody. No account is created, so none is left behind."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    pytest.skip("running as root with neither a postgres nor a nobody account to run PostgreSQL as")


class PostgresServer:
    def __init__(self, bin_dir: pathlib.Path):
        self.bin_dir = bin_dir
        self.user = _server_user()
        self.base = pathlib.Path(tempfile.mkdtemp(prefix="tc_pg_"))  # not under pytest's 0700 tmp
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self.data = self.base / "data"
        self.superuser = "grader"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def _as_server_user(self, die_with_us: bool = False) -> list[str]:
        options = ["--pdeathsig=QUIT"] if die_with_us else []
        if self.user is not None:
            options += [f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups"]
        return ["setpriv", *options] if options and shutil.which("setpriv") else []

    def _run(self, *command):
        completed = subprocess.run(
            self._as_server_user() + [str(self.bin_dir / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            cwd=self.base,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{command[0]} failed:\n{completed.stdout}{completed.stderr}")

    def start(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", self.superuser, "--no-sync", "-E", "UTF8", "--locale=C"
        )
        # The postmaster runs as our child, not daemonised by pg_ctl, and gets SIGQUIT (immediate
        # shutdown) if this process dies: a killed test session leaves no server behind.
        self.log = open(self.base / "server.log", "wb")
        self.process = subprocess.Popen(
            self._as_server_user(die_with_us=True)
            + [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.base),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.base,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.query("SELECT 1")
                return
            except Exception:  # noqa: BLE001 - not accepting connections yet
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("PostgreSQL did not start:\n" + (self.base / "server.log").read_text()) from None
                time.sleep(0.1)

    def stop(self) -> None:
        try:
            if getattr(self, "process", None) is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGQUIT)  # immediate shutdown: the data is thrown away
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            if getattr(self, "log", None) is not None:
                self.log.close()
            shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def query(self, sql: str, database: str = "postgres") -> list[tuple]:
        """Run one statement outside any transaction (CREATE DATABASE needs that)."""
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.superuser, dbname=database)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def create_database(self, template: str | None = None) -> str:
        name = f"gradebook_{uuid.uuid4().hex[:8]}"
        self.query(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return name


def running_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server until the generator is closed; skips when none is installed."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) installed; `make test` installs them (apt, as root)")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
