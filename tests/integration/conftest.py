"""The real local stack for integration tests: one Apache Kafka 4.4 node (KRaft) and one
PostgreSQL cluster per test session; each test gets its own database (from a migrated
template), its own topics and its own consumer groups, and the pipeline's real processes.
Tests that need brokers of their own (three nodes, TLS and SASL, a broker started late or
killed) start them and are marked ``kafka``."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from streams import kafka, lag
from streams.dev.procs import free_port
from streams.dev.stack import DATABASE, LocalStack, PipelineProcess, default_base_dir
from streams.lab.loadgen import Expected, Record, publish_records
from streams.lab.outcome import read_outcome
from streams.settings import Settings
from streams.settings import to_env as settings_env

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    s = LocalStack(default_base_dir())
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def settings(stack: LocalStack, tmp_path: Path) -> Settings:
    """Settings for one test: fresh database, topics and groups, small batches, memory
    tables."""
    assert stack.postgres is not None
    n = next(_counter)
    url = stack.postgres.create_database(f"test_{n}", template=DATABASE)
    s = stack.settings.with_(
        database_url=url, xp_topic=f"xp-events-{n}", topic_partitions=4,
        worker_group=f"worker-{n}", ledger_group=f"ledger-{n}", totals_group=f"totals-{n}",
        action_topic=f"action-events-{n}", action_ledger_group=f"action-ledger-{n}",
        progress_group=f"progress-{n}", claims_topic=f"xp-claims-{n}",
        sink_dlq_topic=f"xp-sinks-{n}.dlq",
        policies_topic=f"xp-policies-{n}", outcomes_topic=f"xp-claim-outcomes-{n}",
        data_dir=str(tmp_path / "worker"), table_store="memory://", metrics_port=free_port(),
        sink_batch_records=500, sink_batch_seconds=0.2, db_retry_max_seconds=1.0,
    )
    asyncio.run(kafka.pipeline_topics(s))
    return s


class Pipeline:
    """The worker, totals writer and ledger sink of one test, as real child processes; with
    ``actions`` also the action ledger sink and the progress writer, with ``grants`` the award
    sink, the grant writer and the rules sink."""

    def __init__(self, settings: Settings, log_dir: Path, actions: bool = False,
                 grants: bool = False) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.actions = actions
        ports = {"worker": settings.metrics_port, "totals-writer": free_port(), "sink": free_port()}
        if actions:
            ports |= {"action-sink": free_port(), "progress-writer": free_port()}
        if grants:
            ports |= {"award-sink": free_port(), "grant-writer": free_port(),
                      "rules-sink": free_port()}
        self.procs = {name: PipelineProcess(name, settings, log_dir / f"{name}.log", port)
                      for name, port in ports.items()}
        self.killed: set[str] = set()

    def start(self, *names: str) -> None:
        for name in names or tuple(self.procs):
            self.procs[name].start()
            self.killed.discard(name)

    def kill(self, name: str) -> None:
        """kill -9 one process; it stays down until started again."""
        self.procs[name].kill()
        self.killed.add(name)

    def stop(self) -> dict[str, int | None]:
        return {name: p.stop() for name, p in self.procs.items()}

    def publish(self, records: list[Record]) -> None:
        asyncio.run(publish_records(self.settings, records))

    def wait_caught_up(self, timeout_s: float = 180) -> None:
        s = self.settings

        def alive(_: dict[str, int]) -> None:
            dead = [n for n, p in self.procs.items()
                    if p.proc is not None and not p.alive() and n not in self.killed]
            assert not dead, f"{dead} exited; logs: {self.logs(dead[0])}"

        async def both() -> None:
            # One call per topic: wait_caught_up tells pairs apart by group.
            stages = [[(s.worker_group, s.xp_topic), (s.ledger_group, s.xp_topic)],
                      [(s.totals_group, s.totals_changelog_topic)]]
            if self.actions:
                stages[1:1] = [[(s.worker_group, s.action_topic),
                                (s.action_ledger_group, s.action_topic)]]
                stages.append([(s.progress_group, s.progress_changelog_topic)])
            for pairs in stages:
                await lag.wait_caught_up(s, pairs, timeout_s, alive, 0.5)
        asyncio.run(both())

    def assert_exact(self, expected: Expected) -> None:
        """Guarantees 1, 2, 3, 5: ledger exact, totals = SUM(ledger) = expected, DLQ = expected."""
        outcome = read_outcome(self.settings, expected)
        assert outcome.problems(expected) == []

    def logs(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]


@pytest.fixture
def pipeline(settings: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(settings, tmp_path)
    try:
        yield p
    finally:
        p.stop()


def query_one(url: str, sql: str, *params: object) -> tuple[object, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return tuple(row)


def query_all(url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]


def streams(
    args: list[str], settings: Settings, stdin: bytes = b"", timeout_s: float = 300,
    **env_overrides: str,
) -> subprocess.CompletedProcess[bytes]:
    """Run the ``streams`` console script with ``settings`` in its environment, in a process
    group of its own: past ``timeout_s`` seconds the whole group (servers and workers it
    started included) is killed -9 and ``subprocess.TimeoutExpired`` raised."""
    env = {**os.environ, **settings_env(settings), **env_overrides}
    cmd = [sys.executable, "-m", "streams", *args]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.2):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def metric(port: int, name: str) -> float:
    """One sample (name with labels, as exposed) of a process's /metrics on ``port``; 0 when
    absent or not served yet."""
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local server
            text = response.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def log_of(proc: PipelineProcess) -> str:
    """Everything ``proc`` logged so far."""
    return proc.log_path.read_text(errors="replace")


def extra_worker(settings: Settings, tmp_path: Path, name: str, **changes: object
                 ) -> PipelineProcess:
    """Another worker process of the same group, with its own store directory and port."""
    s = settings.with_(data_dir=str(tmp_path / name), **changes)
    return PipelineProcess("worker", s, tmp_path / f"{name}.log", free_port())
