"""A throwaway PostgreSQL 15 cluster from Debian's packages (``initdb``/``pg_ctl``).

``initdb`` refuses to run as root; as root the cluster runs as the ``postgres`` user that the
Debian package creates. Authentication is ``trust`` on 127.0.0.1 only.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from streams.dev.procs import free_port


def _bindir() -> Path:
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    for candidate in (shutil.which("pg_ctl"), *debian):
        if candidate:
            return Path(os.path.realpath(candidate)).parent
    raise FileNotFoundError("pg_ctl not found: install PostgreSQL (apt-get install postgresql)")


class PostgresCluster:
    """A PostgreSQL cluster in ``base_dir``, listening on 127.0.0.1:``port``."""

    def __init__(self, base_dir: Path, port: int | None = None) -> None:
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.log_path = base_dir / "postgres.log"
        self.port = port or free_port()
        self.bindir = _bindir()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): "
                               f"{done.stderr.decode(errors='replace').strip()}")

    def url(self, database: str = "postgres") -> str:
        """libpq URL of ``database`` as the superuser ``postgres``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """Create the cluster (``initdb``) unless it exists."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base_dir, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")

    def start(self) -> None:
        """Start the server and wait until it accepts connections (``pg_ctl -w``)."""
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base_dir}"
                " -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", opts,
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m fast``); silent when it is not running."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def create_database(self, name: str, template: str = "template1") -> str:
        """Create database ``name`` (from ``template``) and return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)
