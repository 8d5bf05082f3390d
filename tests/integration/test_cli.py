"""The ``streams`` console script: publishing JSON lines, and clear one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from streams.__main__ import PIPELINE_COMMANDS
from streams.dev.procs import free_port
from streams.settings import Settings
from tests.integration.conftest import settings_env, streams, wait_for

pytestmark = pytest.mark.integration




def test_publish_json_lines_from_stdin(settings: Settings) -> None:
    """Three event objects and one batched record (an array of one student's events)."""
    student = str(uuid.uuid4())
    events = [{"id": str(uuid.uuid4()), "student_id": student, "kind": "quiz", "delta": 5,
               "created_at": "2026-11-20T10:00:00Z"} for _ in range(5)]
    lines = b"\n".join([*(orjson.dumps(e) for e in events[:3]), orjson.dumps(events[3:])])
    done = streams(["publish", "-"], settings, lines + b"\n\n")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "published 4 records"


def test_publish_rejects_a_line_without_a_student_in_one_line(settings: Settings) -> None:
    done = streams(["publish", "-"], settings, b'{"id": "x"}\n')
    assert done.returncode == 1
    assert done.stderr.decode().strip() == ("Error: line 1: not an event object (or an array of "
                                            "them) with student_id")


def test_publish_to_an_unreachable_broker_fails_clearly(settings: Settings) -> None:
    dead = settings.with_(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    done = streams(["publish", "-"], dead, b"")
    assert done.returncode == 1
    err = done.stderr.decode().strip()
    assert err.startswith("Error: cannot reach the brokers") and "\n" not in err


@pytest.mark.parametrize("command", ["worker", "sink", "monitor"])
def test_worker_and_sink_give_up_on_an_unreachable_broker_in_one_line(
        settings: Settings, command: str) -> None:
    """After XP_BROKER_WAIT_SECONDS of retries (each logged), exit 1 with one line."""
    dead = settings.with_(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    done = streams([command], dead, XP_BROKER_WAIT_SECONDS="2")
    assert done.returncode == 1, done.stderr.decode()
    err = done.stderr.decode()
    assert "no broker answered" in err and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("Error: cannot reach the brokers"), err


def test_bad_arguments_and_settings_exit_non_zero(settings: Settings) -> None:
    done = streams(["lab", "loadgen", "--events", "-5", "--expected", "x.json"], settings)
    assert done.returncode == 2 and b"--events" in done.stderr
    assert streams(["migrate"], settings).returncode == 0  # sane settings work
    done = streams(["migrate"], settings, XP_TOPIC_PARTITIONS="lots")
    assert done.returncode == 1
    assert done.stderr.decode().strip() == "Error: XP_TOPIC_PARTITIONS='lots' is not a whole number"


def test_status_reports_lag_dlq_and_reconciliation(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``streams status --json`` after a small workload: lag 0, DLQ by reason, reconciled."""
    from streams.lab.loadgen import LoadSpec, generate
    from tests.integration.conftest import Pipeline

    pipeline = Pipeline(settings, tmp_path)
    records, expected = generate(LoadSpec(events=1000, students=30, seed=41,
                                          max_record_bytes=settings.max_record_bytes))
    try:
        pipeline.start()
        pipeline.publish(records)
        pipeline.wait_caught_up()
        done = streams(["status", "--json"], settings)
        table = streams(["status"], settings)
        wide = streams(["status", "--partitions"], settings)
    finally:
        pipeline.stop()
    assert done.returncode == 0, done.stderr.decode()
    assert table.returncode == wide.returncode == 0, table.stderr.decode()
    compact = table.stdout.decode()
    assert len(compact.splitlines()) <= 40, compact
    for stage in ("fold worker", "ledger sink", "totals writer", "reconciliation"):
        assert stage in compact, compact
    assert "consumer group" in wide.stdout.decode() and len(wide.stdout.splitlines()) > 40
    status = orjson.loads(done.stdout)
    assert status["last_commit_seconds"][settings.ledger_group] >= 0
    groups = {lag["group"] for lag in status["lags"]}
    assert groups == {settings.worker_group, settings.ledger_group, settings.totals_group,
                      settings.action_ledger_group, settings.progress_group,
                      settings.award_group, settings.grant_group, settings.rules_group}
    assert all(lag["lag_records"] == 0 for lag in status["lags"])
    assert status["dlq"] == expected.invalid
    assert status["mismatched_students"] == 0
    assert status["reconciliation"].startswith("ok")


def test_status_without_a_broker_or_a_database_says_so_in_one_line(settings: Settings) -> None:
    """An unreachable broker, then an unreachable database: one line each, exit 1."""
    dead_port = free_port()
    for env, expected in (
            ({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{dead_port}"}, "cannot reach the brokers"),
            ({"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{dead_port}/x"}, "")):
        done = streams(["status"], settings, **env)
        err = done.stderr.decode().strip()
        assert done.returncode == 1, err
        assert len(err.splitlines()) == 1 and err.startswith("Error: ") and expected in err, err


@pytest.mark.parametrize("command", sorted(PIPELINE_COMMANDS))
def test_a_process_still_starting_exits_0_on_sigterm_even_when_it_is_repeated(
        settings: Settings, command: str, tmp_path: Path) -> None:
    """A supervisor stopping a process that waits for its broker sees exit status 0, also when
    it repeats SIGTERM every millisecond until the process is gone (a repeat used to land
    while Python finalized, after it had put SIGTERM back to its default: status -15)."""
    dead = settings.with_(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
                          database_url=f"postgresql://xp@127.0.0.1:{free_port()}/xp")
    env = {**os.environ, **settings_env(dead), "XP_BROKER_WAIT_SECONDS": "60",
           "XP_METRICS_PORT": "0"}
    log = tmp_path / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "streams", command], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:  # its first log line: imports done, it is waiting for a broker
        wait_for(lambda: proc.poll() is not None or log.stat().st_size > 0, 60,
                 f"{command} to log that it waits")
        assert proc.poll() is None, log.read_text()
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.001)
        assert proc.wait(5) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_the_demo_compares_like_with_like_and_passes(tmp_path: Path) -> None:
    """``streams demo`` on its own embedded stack: every summary row that has an expected figure
    equals it (the awards the grant stream adds to the ledger are counted apart from the
    published XP records), and the demo ends with its checks passed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XP_", "KAFKA_"))}
    done = subprocess.run([sys.executable, "-m", "streams", "lab", "demo", "--events", "3000",
                           "--students", "100"], env=env, cwd=tmp_path, capture_output=True,
                          timeout=300, check=False)
    out = done.stdout.decode()
    assert done.returncode == 0, out[-4000:] + done.stderr.decode()[-2000:]
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()
            if line.startswith("│") and line.count("│") == 4]
    compared = [r for r in rows if r[2]]
    assert len(compared) >= 20, out
    assert [r for r in compared if r[1] != r[2]] == []
    assert "all checks passed" in out
