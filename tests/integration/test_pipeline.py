"""The pipeline end to end on real Apache Kafka and PostgreSQL: docs/design.md guarantees 1-5
and 8."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
import pytest

from streams import kafka
from streams.db.queries import query
from streams.dev.kafka_cluster import KafkaCluster
from streams.dev.procs import free_port
from streams.events import partition_for
from streams.lab.loadgen import LoadSpec, batch_records, generate, publish_records
from tests.integration.conftest import (
    Pipeline,
    metric,
    query_all,
    query_one,
    streams,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def sigterm_disposition(pid: int) -> str:
    """How process ``pid`` treats SIGTERM now: ``caught``, ``ignored`` or ``default``."""
    fields = dict(line.split(":\t", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    bit = 1 << (signal.SIGTERM - 1)
    if int(fields["SigIgn"], 16) & bit:
        return "ignored"
    return "caught" if int(fields["SigCgt"], 16) & bit else "default"


def stacks_of(pid: int) -> str:
    """The Python stacks of every thread of process ``pid`` (py-spy), to tell why it has not
    exited: a test's own evidence when a process hangs, taken before it is killed."""
    try:
        dump = subprocess.run([str(Path(sys.executable).parent / "py-spy"), "dump", "--pid",
                               str(pid)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"py-spy failed: {exc!r}"
    return dump.stdout + dump.stderr


def ledger_rows(pipeline: Pipeline) -> int:
    return int(query_one(pipeline.settings.database_url, "SELECT count(*) FROM xp_events")[0])  # type: ignore[call-overload]


def test_workload_with_duplicates_and_invalid_records_is_exact(pipeline: Pipeline) -> None:
    """Guarantees 1, 2, 3, 5 on a loadgen workload."""
    records, expected = generate(LoadSpec(events=6000, students=200, seed=11,
                                          max_record_bytes=pipeline.settings.max_record_bytes))
    pipeline.start()
    pipeline.publish(records)
    pipeline.wait_caught_up()
    pipeline.assert_exact(expected)
    assert expected.duplicates > 0 and sum(expected.invalid.values()) > 0
    # SIGTERM: every process finishes its batch, commits and exits 0
    assert pipeline.stop() == {"worker": 0, "totals-writer": 0, "sink": 0}


def test_batched_records_are_exact_and_replay_agrees(pipeline: Pipeline, tmp_path: Path) -> None:
    """Guarantees 1, 2, 3, 5 when records carry batches of one student's events:
    the same workload packed 50 events a record gives the same ledger, totals and DLQ, each
    ledger row keeps its place in its record, and replay reproduces the ledger."""
    records, expected = generate(LoadSpec(events=6000, students=200, seed=17,
                                          max_record_bytes=pipeline.settings.max_record_bytes))
    batched = batch_records(records, 50, pipeline.settings.max_record_bytes)
    assert len(batched) < len(records) / 5
    pipeline.start()
    pipeline.publish(batched)
    pipeline.wait_caught_up()
    pipeline.assert_exact(expected)
    deepest = query_one(pipeline.settings.database_url, "SELECT max(record_index) FROM xp_events")
    assert 40 <= deepest[0] <= 49  # type: ignore[operator]
    done = streams(["replay", "--json", "--output", str(tmp_path / "r.json")], pipeline.settings)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    assert report["accepted"] == expected.valid_unique


def test_replaying_the_workload_counts_nothing_twice(pipeline: Pipeline) -> None:
    """Guarantee 2: the same records published again change nothing."""
    records, expected = generate(LoadSpec(events=2000, students=50, seed=12,
                                          max_record_bytes=pipeline.settings.max_record_bytes))
    pipeline.start()
    pipeline.publish(records)
    pipeline.publish([r for r in records if b'"delta"' in r[1]][:1500])  # valid ones, resent
    pipeline.wait_caught_up()
    outcome_problems = []
    from streams.lab.outcome import read_outcome

    outcome = read_outcome(pipeline.settings, expected)
    outcome_problems = [p for p in outcome.problems(expected) if not p.startswith("DLQ")]
    assert outcome_problems == []


def test_kill_9_of_the_sink_mid_workload(pipeline: Pipeline) -> None:
    """Guarantee 4 for the ledger sink: kill -9 while writing, restart, ledger still exact."""
    records, expected = generate(LoadSpec(events=20000, students=300, seed=13,
                                          max_record_bytes=pipeline.settings.max_record_bytes))
    pipeline.start()
    pipeline.publish(records)
    wait_for(lambda: ledger_rows(pipeline) > 1000, 60, "the sink to write some rows", 0.05)
    pipeline.kill("sink")
    assert ledger_rows(pipeline) < expected.valid_unique, "killed too late to prove anything"
    pipeline.start("sink")
    pipeline.wait_caught_up()
    pipeline.assert_exact(expected)


@pytest.mark.parametrize("batch", [1, 50], ids=["single", "batched"])
def test_kill_9_of_the_worker_mid_workload(pipeline: Pipeline, tmp_path, batch: int) -> None:  # type: ignore[no-untyped-def]
    """Guarantee 4 for the worker, with its RocksDB table store: kill -9, restart, exact; with
    records of one event and with batched records of up to 50 events."""
    # Checkpoints of about 200 events, so the kill lands mid-workload.
    settings = pipeline.settings.with_(table_store="rocksdb://",
                                       worker_batch_records=max(1, 200 // batch),
                                       worker_checkpoint_records=max(1, 200 // batch))
    pipeline = Pipeline(settings, tmp_path / "rocks")
    records, expected = generate(LoadSpec(events=20000, students=300, seed=14,
                                          max_record_bytes=settings.max_record_bytes))
    if batch > 1:
        records = batch_records(records, batch, settings.max_record_bytes)
    try:
        pipeline.start()
        pipeline.publish(records)

        def applied() -> int:
            return int(query_one(settings.database_url,  # type: ignore[call-overload]
                                 "SELECT coalesce(sum(version), 0) FROM xp_totals")[0])
        wait_for(lambda: applied() > 500, 120, "the worker to fold some events", 0.05)
        pipeline.kill("worker")
        assert applied() < expected.valid_unique, "killed too late to prove anything"
        pipeline.start("worker")
        pipeline.wait_caught_up()
        pipeline.assert_exact(expected)
    finally:
        pipeline.stop()


def test_sigterm_mid_workload_commits_what_was_written_and_exits_0(pipeline: Pipeline) -> None:
    """Graceful shutdown: SIGTERM to every process while it works through a backlog;
    each finishes its batch, commits and exits 0 within 30 s; the ledger sink's committed
    offsets cover every row it wrote; after a restart the outcome is exact."""
    records, expected = generate(LoadSpec(events=20000, students=300, seed=19,
                                          max_record_bytes=pipeline.settings.max_record_bytes))
    s = pipeline.settings
    pipeline.start()
    pipeline.publish(records)
    wait_for(lambda: ledger_rows(pipeline) > 2000, 60, "the sink to write some rows", 0.05)
    procs = pipeline.procs.values()
    dispositions = {p.command: sigterm_disposition(p.proc.pid) for p in procs if p.proc}
    for p in procs:
        assert p.proc is not None
        p.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    hung: dict[str, str] = {}
    for p in procs:
        assert p.proc is not None
        try:
            p.proc.wait(max(0.0, started + 30 - time.monotonic()))
        except subprocess.TimeoutExpired:
            hung[p.command] = stacks_of(p.proc.pid)
    codes = {p.command: p.stop(timeout_s=0) for p in procs}  # SIGKILL after 30 s: code -9
    assert codes == {"worker": 0, "totals-writer": 0, "sink": 0}, (codes, dispositions, {
        name: pipeline.logs(name)[-3000:] for name, code in codes.items() if code != 0}, hung)
    assert time.monotonic() - started < 30
    assert ledger_rows(pipeline) < expected.valid_unique, "stopped too late to prove anything"

    async def committed() -> dict[int, int | None]:
        async with kafka.OffsetReader(s) as reader:
            return await reader.committed(s.ledger_group, s.xp_topic)
    offsets = asyncio.run(committed())
    with psycopg.connect(s.database_url) as conn:
        written = dict(conn.execute(  # type: ignore[arg-type]
            'SELECT "partition", max("offset") FROM xp_events GROUP BY 1').fetchall())
    for partition, last in written.items():
        assert (offsets.get(partition) or 0) > last, (partition, last, offsets)
    pipeline.start()
    pipeline.wait_caught_up()
    pipeline.assert_exact(expected)


def test_database_outage_loses_nothing(pipeline: Pipeline, stack) -> None:  # type: ignore[no-untyped-def]
    """Guarantee 6: PostgreSQL stopped mid-stream; the sinks pause, retry and resume."""
    records, expected = generate(LoadSpec(events=20000, students=300, seed=15,
                                          max_record_bytes=pipeline.settings.max_record_bytes))
    pipeline.start()
    pipeline.publish(records)
    wait_for(lambda: ledger_rows(pipeline) > 500, 60, "the sink to write some rows", 0.05)
    stack.postgres.stop(mode="immediate")
    time.sleep(4)  # the outage itself: nothing to poll for while the database is down
    stack.postgres.start()
    pipeline.wait_caught_up()
    pipeline.assert_exact(expected)
    assert all(p.alive() for p in pipeline.procs.values())


def test_duplicate_after_the_dedupe_horizon_counts_once(stack, settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Guarantee 8: the dedupe entry expires; a late duplicate is caught by the ledger check."""
    s = settings.with_(dedupe_horizon_seconds=2.0, dedupe_expire_interval_seconds=0.5)
    pipeline = Pipeline(s, tmp_path)
    student = str(uuid.uuid4())

    def record(delta: int) -> tuple[bytes, bytes]:
        return student.encode(), orjson.dumps({
            "id": str(uuid.uuid4()), "student_id": student, "kind": "quiz", "delta": delta,
            "created_at": datetime.now(UTC).isoformat()})
    first, marker = record(40), record(2)
    try:
        pipeline.start()
        pipeline.publish([first])
        pipeline.wait_caught_up()
        wait_for(lambda: metric(pipeline.settings.metrics_port, "xp_dedupe_expired_total") >= 1, 30,
                 "the dedupe entry to expire")
        pipeline.publish([first, marker])  # the duplicate, days late in spirit, then a new event
        pipeline.wait_caught_up()
        row = query_one(s.database_url,
                        "SELECT total_xp, version FROM xp_totals WHERE student_id = %s", student)
        assert row == (42, 2)
        assert metric(pipeline.settings.metrics_port,
                      'xp_dedupe_ledger_checks_total{verdict="duplicate"}') == 1
        assert ledger_rows(pipeline) == 2
    finally:
        pipeline.stop()


def test_one_event_id_sent_for_two_students_counts_once_for_each(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/design.md, Contracts: an event is (id, owner). One id sent for three students (two
    in one partition, one in another) and for two profiles is an event of each: each total and
    each vector progress includes it once, the ledgers hold a row per owner, the sinks count
    the shared ids, and a fresh recovery of every table equals the ledgers. Before, the ledger
    kept one row of the id while every partition folded it (and a second student in the same
    partition was a conflict): total != SUM(ledger) for the others, for ever."""
    s = settings
    n = s.topic_partitions
    students = [str(uuid.uuid4()) for _ in range(64)]
    a = students[0]
    b = next(x for x in students if partition_for(x.encode(), n) != partition_for(a.encode(), n))
    c = next(x for x in students[1:]
             if partition_for(x.encode(), n) == partition_for(a.encode(), n))
    event_id, at = str(uuid.uuid4()), datetime.now(UTC).isoformat()

    def xp(student: str, delta: int) -> tuple[bytes, bytes]:
        return student.encode(), orjson.dumps({"id": event_id, "student_id": student,
                                               "kind": "quiz", "delta": delta, "created_at": at})

    def action(profile: str) -> tuple[bytes, bytes]:
        return profile.encode(), orjson.dumps({
            "id": event_id, "action_id": "apply_mind", "profile_id": profile,
            "source": "dashboard", "vector": "mind", "selected_at": at, "completed_at": at})
    pipeline = Pipeline(s, tmp_path / "logs", actions=True)
    try:
        pipeline.start()
        pipeline.publish([xp(a, 10), xp(b, 20), xp(c, 30), xp(b, 20)])  # the last: a duplicate
        asyncio.run(publish_records(s, [action(a), action(b), action(b)], topic=s.action_topic))
        pipeline.wait_caught_up()
        url = s.database_url
        totals = dict(query_all(url, "SELECT student_id::text, total_xp FROM xp_totals"))
        assert totals == {a: 10, b: 20, c: 30}
        assert query_all(url, "SELECT count(*) FROM xp_events WHERE id = %s", event_id) == [(3,)]
        assert query_all(url, "SELECT profile_id::text, applied FROM vector_progress "
                              "WHERE applied > 0 ORDER BY 1") == sorted([(a, 1), (b, 1)])
        assert query_all(url, "SELECT count(*) FROM action_events") == [(2,)]
        assert query_all(url, query("mismatched_students")) == []
        sinks = pipeline.procs
        assert metric(sinks["sink"].metrics_port,
                      'xp_sink_shared_ids_total{sink="ledger"}') == 3
        assert metric(sinks["action-sink"].metrics_port,
                      'xp_sink_shared_ids_total{sink="actions"}') == 2
        assert metric(s.metrics_port, 'xp_records_total{outcome="duplicate",stage="worker"}') == 1
        audit = streams(["audit-changelogs", "--json"], s)
        assert audit.returncode == 0, audit.stdout.decode()[-2000:]
    finally:
        pipeline.stop()


def game_server_lines(student: str, n: int) -> list[tuple[str, bytes]]:
    """n valid events of one student as (key, JSON) pairs, as a game server would send them."""
    return [(student, orjson.dumps({
        "id": str(uuid.uuid4()), "student_id": student, "kind": "typing", "delta": i,
        "created_at": f"2026-11-20T10:00:{i:02d}+01:00"})) for i in range(n)]


def run_kcat(args: list[str], stdin: bytes, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    """Run Debian's kcat (librdkafka 2.0.2 in bookworm), as a non-Python game server would."""
    return subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=30,
                          check=False)


def test_events_published_with_kcat_are_accepted(pipeline: Pipeline, tmp_path: Path) -> None:
    """A non-Python game server (kcat on librdkafka) publishes; the pipeline takes its events."""
    if shutil.which("kcat") is None:
        pytest.skip("kcat not installed (make test installs it)")
    student = str(uuid.uuid4())
    lines = [f"{k}\t{v.decode()}" for k, v in game_server_lines(student, 20)]
    done = run_kcat(["-P", "-b", pipeline.settings.kafka_bootstrap_servers, "-t",
                     pipeline.settings.xp_topic, "-K", "\t", "-X", "partitioner=murmur2_random"],
                    "\n".join(lines).encode(), tmp_path)
    assert done.returncode == 0 and b"ERROR" not in done.stderr, done.stderr.decode()
    pipeline.start()
    pipeline.wait_caught_up()
    row = query_one(pipeline.settings.database_url,
                    "SELECT total_xp, games_played FROM xp_totals WHERE student_id = %s", student)
    assert row == (sum(range(20)), 20)


def test_events_published_with_librdkafka_are_accepted(pipeline: Pipeline) -> None:
    """librdkafka (the C client of most non-Python game servers) publishes alongside aiokafka.

    With ``partitioner=murmur2_random`` its records land where aiokafka's do, and one student's
    totals are exact. With librdkafka's default partitioner a student's records can land in
    another partition: those go to the DLQ as ``wrong_partition``, never to ledger or totals.
    """
    import confluent_kafka

    s = pipeline.settings
    student, stray = str(uuid.uuid4()), str(uuid.uuid4())
    rd = confluent_kafka.Producer({"bootstrap.servers": s.kafka_bootstrap_servers,
                                   "partitioner": "murmur2_random"})
    for key, value in game_server_lines(student, 10):
        rd.produce(s.xp_topic, key=key.encode(), value=value)
    assert rd.flush(30) == 0
    pipeline.publish([(k.encode(), v) for k, v in game_server_lines(student, 30)[10:]])
    from streams.events import partition_for

    wrong = (partition_for(stray.encode(), s.topic_partitions) + 1) % s.topic_partitions
    for key, value in game_server_lines(stray, 3):
        rd.produce(s.xp_topic, key=key.encode(), value=value, partition=wrong)
    assert rd.flush(30) == 0
    pipeline.start()
    pipeline.wait_caught_up()
    row = query_one(s.database_url,
                    "SELECT total_xp, games_played FROM xp_totals WHERE student_id = %s", student)
    assert row == (sum(range(30)), 30)
    assert query_one(s.database_url, "SELECT count(*) FROM xp_events WHERE student_id = %s",
                     stray) == (0,)
    import asyncio

    from streams.audit.dlq import count_dlq

    assert asyncio.run(count_dlq(s)) == {"wrong_partition": 3}


def test_sinks_scaling_out_and_in_lose_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    """Guarantee 9 for the sink: a second sink joins mid-workload (rebalance while batches are
    being written), then the first is killed for good; the ledger is exact."""
    from streams.dev.stack import PipelineProcess

    s = pipeline.settings.with_(sink_batch_records=200)
    pipeline.settings = s
    pipeline.procs = {
        "worker": PipelineProcess("worker", s, tmp_path / "worker.log", s.metrics_port),
        "totals-writer": PipelineProcess("totals-writer", s, tmp_path / "tw.log", free_port()),
        "sink": PipelineProcess("sink", s, tmp_path / "sink.log", free_port()),
        "sink-2": PipelineProcess("sink", s, tmp_path / "sink-2.log", free_port()),
    }
    records, expected = generate(LoadSpec(events=30000, students=400, seed=16,
                                          max_record_bytes=s.max_record_bytes))
    pipeline.start("worker", "totals-writer", "sink")
    pipeline.publish(records[:15000])
    wait_for(lambda: ledger_rows(pipeline) > 2000, 60, "the first sink to write some rows", 0.05)
    pipeline.start("sink-2")
    pipeline.publish(records[15000:])
    wait_for(lambda: "assigned" in (tmp_path / "sink-2.log").read_text(), 60,
             "the second sink to get partitions")
    pipeline.kill("sink")
    pipeline.wait_caught_up()
    pipeline.assert_exact(expected)


@pytest.mark.kafka
def test_the_pipeline_started_before_its_broker_starts_by_itself(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The worker and the sinks wait for a broker at start-up (XP_BROKER_WAIT_SECONDS), so a
    stack restarted as a whole comes up in any order; then the outcome is exact."""
    broker = KafkaCluster(tmp_path / "late-broker")
    s = settings.with_(kafka_bootstrap_servers=broker.bootstrap_servers)
    pipeline = Pipeline(s, tmp_path)
    try:
        pipeline.start()
        for name in pipeline.procs:
            wait_for(lambda n=name: pipeline.logs(n).count("no broker answered") >= 2, 60,
                     f"{name} to retry the broker")
        broker.start()
        asyncio.run(kafka.pipeline_topics(s))
        records, expected = generate(LoadSpec(events=3000, students=100, seed=23,
                                              max_record_bytes=s.max_record_bytes))
        pipeline.publish(records)
        pipeline.wait_caught_up()
        pipeline.assert_exact(expected)
        assert pipeline.stop() == {"worker": 0, "totals-writer": 0, "sink": 0}
    finally:
        pipeline.stop()
        broker.stop()


@pytest.mark.kafka
def test_a_broker_lost_while_faust_starts_costs_the_worker_a_restart_in_place(  # type: ignore[no-untyped-def]
        settings, tmp_path) -> None:
    """A broker that dies after the worker's wait for it but inside Faust's own start (whose
    bootstrap does not retry) makes the worker start again in the same process (same PID, no
    exit for a supervisor to see); once the broker is back the outcome is exact. When Faust's
    start hangs instead of failing (its group-coordinator lookup retries a lost node for
    ever), the start-up deadline (XP_WORKER_RECOVERY_TIMEOUT_SECONDS, here 15 s) does it."""
    broker = KafkaCluster(tmp_path / "broker")
    s = settings.with_(kafka_bootstrap_servers=broker.bootstrap_servers,
                       worker_recovery_timeout_seconds=15.0)
    pipeline = Pipeline(s, tmp_path)
    log = tmp_path / "worker.log"
    try:
        broker.start()
        asyncio.run(kafka.pipeline_topics(s))
        pipeline.start("worker")
        proc = pipeline.procs["worker"].proc
        assert proc is not None
        wait_for(lambda: log.exists() and "[^Worker]: Starting" in log.read_text(), 60,
                 "Faust to start (after the worker's wait for a broker)", 0.01)
        broker.kill(1)
        wait_for(lambda: "starting again" in log.read_text(), 120,
                 "the worker to start again after losing the broker")
        broker.restart(1)
        asyncio.run(kafka.pipeline_topics(s))
        pipeline.start("totals-writer", "sink")
        records, expected = generate(LoadSpec(events=2000, students=50, seed=29,
                                              max_record_bytes=s.max_record_bytes))
        pipeline.publish(records)
        pipeline.wait_caught_up()
        pipeline.assert_exact(expected)
        assert proc.poll() is None and pipeline.procs["worker"].proc is proc
        assert pipeline.stop() == {"worker": 0, "totals-writer": 0, "sink": 0}
    finally:
        pipeline.stop()
        broker.stop()


def probe(port: int, path: str) -> tuple[int, str]:
    """(HTTP status, body) of ``path`` on a process's metrics port; (0, why) when it does
    not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:  # noqa: S310
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()
    except OSError as exc:
        return 0, str(exc)


def not_ready(port: int) -> tuple[int, str] | None:
    """The /readyz answer of a process when it is 503, else None."""
    answer = probe(port, "/readyz")
    return answer if answer[0] == 503 else None


def test_health_endpoints_follow_start_up_and_a_database_outage(pipeline: Pipeline,
                                                                 stack) -> None:  # type: ignore[no-untyped-def]
    """/healthz answers 200 while a process runs; /readyz says 503 with its reason until the
    worker has recovered its tables and the sinks have their partitions, 503 for the sinks
    while PostgreSQL is down, and 200 again once it is back (docs/design.md, Operations)."""
    records, expected = generate(LoadSpec(events=2000, students=100, seed=29,
                                          max_record_bytes=pipeline.settings.max_record_bytes))
    ports = {name: p.metrics_port for name, p in pipeline.procs.items()}
    pipeline.start()
    early = {name: probe(port, "/readyz") for name, port in ports.items()}
    assert all(status in (0, 503) for status, _ in early.values()), early  # not ready yet
    wait_for(lambda: all(probe(port, "/readyz")[0] == 200 for port in ports.values()), 120,
             "every process ready")
    assert all(probe(port, "/healthz") == (200, "ok") for port in ports.values())
    pipeline.publish(records)
    stack.postgres.stop(mode="immediate")
    try:
        for name in ("sink", "totals-writer"):
            _, why = wait_for(lambda n=name: not_ready(ports[n]), 60,
                              f"{name} not ready without PostgreSQL")
            assert why.startswith("PostgreSQL unavailable"), why
        assert probe(ports["worker"], "/readyz")[0] == 200  # the worker needs no database
        assert all(probe(port, "/healthz") == (200, "ok") for port in ports.values())
    finally:
        stack.postgres.start()
    wait_for(lambda: all(probe(port, "/readyz")[0] == 200 for port in ports.values()), 120,
             "every process ready again")
    pipeline.wait_caught_up()
    pipeline.assert_exact(expected)


def test_a_record_at_the_brokers_size_limit_is_dead_lettered_and_the_partition_goes_on(
        pipeline: Pipeline) -> None:
    """A 1,048,440-byte XP record (the broker's limit is 1,048,588) is accepted by the broker
    and refused by the worker (``oversized``). Before: its DLQ record, the whole value plus
    headers, was over the producer's 1 MiB limit: the worker exited with
    ``MessageSizeTooLargeError`` and again after every restart, the partition halted. Now the
    DLQ record keeps the first 1,000,000 bytes with ``value_cut_from``, and the student's next
    events are folded."""
    s = pipeline.settings
    student = str(uuid.uuid4())
    lines = game_server_lines(student, 3)
    padding = 1_048_440 - len(lines[0][1]) - len(b', "metadata": {"pad": ""}')
    big = lines[0][1][:-1] + b', "metadata": {"pad": "' + b"x" * padding + b'"}}'
    assert len(big) == 1_048_440
    pipeline.start()
    pipeline.publish([(student.encode(), big), *((k.encode(), v) for k, v in lines[1:])])
    pipeline.wait_caught_up()
    assert query_one(s.database_url, "SELECT games_played FROM xp_totals WHERE student_id = %s",
                     student) == (2,)

    async def dlq() -> list[tuple[int, dict[str, bytes]]]:
        return [(len(r.value or b""), dict(r.headers))
                async for r in kafka.read_to_end(s, s.dlq_topic)]
    ((size, headers),) = asyncio.run(dlq())
    assert size == 1_000_000 and headers["value_cut_from"] == b"1048440"
    assert headers["reason"] == b"oversized"
