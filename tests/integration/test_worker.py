"""The fold worker's checkpoint under crashes and rebalances, on real Apache Kafka and PostgreSQL
(docs/design.md, "Fold worker: checkpoints"; guarantees 1-4 and 9)."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import orjson
import pytest

from streams import kafka, lag
from streams.audit.changelogs import recover_changelog
from streams.audit.dlq import count_dlq
from streams.cli.pipeline import fold_streams
from streams.dev.kafka_cluster import KafkaCluster
from streams.events import partition_for
from streams.lab.loadgen import LoadSpec, generate
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker.app import build
from tests.integration.conftest import (
    Pipeline,
    extra_worker,
    log_of,
    metric,
    query_one,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def folded(settings: Settings) -> int:
    """Events applied to the totals in PostgreSQL (sum of the rows' versions)."""
    return int(query_one(settings.database_url,  # type: ignore[call-overload]
                         "SELECT coalesce(sum(version), 0) FROM xp_totals")[0])


@pytest.mark.parametrize("step", ["produced", "positioned"])
def test_kill_between_checkpoint_steps_is_exact(settings: Settings, tmp_path: Path,
                                                step: str) -> None:
    """kill -9 (exit 137 at a failpoint) after the changelog is acknowledged and before the
    position is written, and after the position and before the local store: after a restart
    the ledger, the totals and the DLQ are exact (guarantee 4), RocksDB store. Checkpoints
    may hold up to four fetched batches (the backlog's)."""
    s = settings.with_(table_store="rocksdb://", worker_failpoint=f"{step}:4",
                       worker_batch_records=500, worker_checkpoint_records=2000)
    pipeline = Pipeline(s, tmp_path / "p")
    records, expected = generate(LoadSpec(events=12000, students=200, seed=31,
                                          max_record_bytes=s.max_record_bytes))
    try:
        pipeline.start()
        pipeline.publish(records)
        worker = pipeline.procs["worker"]
        wait_for(lambda: not worker.alive(), 120, f"the worker to stop at failpoint {step}")
        assert worker.proc is not None and worker.proc.returncode == 137, log_of(worker)[-2000:]
        assert f"failpoint {step}: exiting" in log_of(worker)
        pipeline.killed.add("worker")
        assert folded(s) < expected.valid_unique, "crashed too late to prove anything"
        worker.settings = s.with_(worker_failpoint="")
        pipeline.start("worker")
        pipeline.wait_caught_up()
        pipeline.assert_exact(expected)
    finally:
        pipeline.stop()


@pytest.mark.parametrize("checkpoint_bytes", [16 << 20, 1024])
def test_a_backlog_folds_while_a_checkpoint_commits(settings: Settings, tmp_path: Path,
                                                    checkpoint_bytes: int) -> None:
    """While the first checkpoint's commit is held for 3 s (a failpoint pause, the event loop
    running), the reader folds the backlog's full fetches into the next checkpoint instead of
    waiting, up to ``XP_WORKER_CHECKPOINT_RECORDS``: a checkpoint of more than two fetches
    is committed. Unless ``XP_WORKER_CHECKPOINT_BYTES`` is below what one fetch sends: then
    no checkpoint holds more than one. The totals, ledger and DLQ are exact either way
    (docs/design.md, "Fold worker: checkpoints")."""
    s = settings.with_(worker_batch_records=500, worker_checkpoint_records=2000,
                       worker_checkpoint_bytes=checkpoint_bytes,
                       worker_failpoint="folded:1:3")
    pipeline = Pipeline(s, tmp_path / "p")
    records, expected = generate(LoadSpec(events=12000, students=200, seed=33,
                                          max_record_bytes=s.max_record_bytes))
    try:
        pipeline.start()
        pipeline.publish(records)
        pipeline.wait_caught_up()
        pipeline.assert_exact(expected)
        port = pipeline.procs["worker"].metrics_port
        checkpoints = metric(port, "xp_worker_checkpoint_records_count")
        small = metric(port, 'xp_worker_checkpoint_records_bucket{le="1000.0"}')
        assert metric(port, "xp_worker_checkpoint_bytes_count") == checkpoints
        assert metric(port, "xp_worker_checkpoint_bytes_sum") > 0
        if checkpoint_bytes > 1024:
            assert checkpoints > small, f"no checkpoint held over 1,000 records ({checkpoints})"
        else:
            assert checkpoints == small, f"{checkpoints - small} checkpoints over 1,000 records"
    finally:
        pipeline.stop()


def test_rebalance_in_the_middle_of_a_checkpoint(settings: Settings, tmp_path: Path) -> None:
    """A second worker joins while the first pauses inside a checkpoint (changelog
    acknowledged, position not yet written): the revoke waits for the checkpoint, the
    partitions are split, nothing is lost or counted twice (guarantee 9)."""
    s = settings.with_(worker_batch_records=500)
    pipeline = Pipeline(s.with_(worker_failpoint="produced:3:6"), tmp_path / "p")
    second = extra_worker(s, tmp_path, "worker-2")
    records, expected = generate(LoadSpec(events=12000, students=200, seed=32,
                                          max_record_bytes=s.max_record_bytes))
    try:
        pipeline.start()
        pipeline.publish(records)
        first = pipeline.procs["worker"]
        wait_for(lambda: "failpoint produced: pausing" in log_of(first), 120,
                 "the first worker to pause inside a checkpoint")
        second.start()
        wait_for(lambda: "reading partitions" in log_of(second), 60,
                 "the second worker to be assigned partitions")
        pipeline.wait_caught_up()
        pipeline.assert_exact(expected)
        assert first.alive() and second.alive(), log_of(first)[-2000:] + log_of(second)[-2000:]
    finally:
        second.stop()
        pipeline.stop()


@pytest.mark.parametrize("standbys", [0, 1])
def test_worker_joins_while_another_is_killed(settings: Settings, tmp_path: Path,
                                              standbys: int) -> None:
    """Two workers share the partitions; a third joins and one of the first two is killed -9
    at once: the survivors recover its tables and positions; exact (guarantees 4, 9). With a
    standby replica of each table partition (RocksDB stores, as deployed on Kubernetes) the
    partitions of the killed worker move to processes that already hold copies."""
    s = settings.with_(worker_batch_records=500, worker_standby_replicas=standbys)
    if standbys:
        s = s.with_(table_store="rocksdb://")
    pipeline = Pipeline(s, tmp_path / "p")
    second = extra_worker(s, tmp_path, "worker-2")
    third = extra_worker(s, tmp_path, "worker-3")
    records, expected = generate(LoadSpec(events=16000, students=300, seed=33,
                                          max_record_bytes=s.max_record_bytes))
    try:
        pipeline.start()
        second.start()
        wait_for(lambda: "reading partitions" in log_of(second), 60,
                 "the second worker to be assigned partitions")
        pipeline.publish(records[: len(records) // 2])
        wait_for(lambda: folded(s) > 1000, 120, "the workers to fold some events")
        third.start()
        pipeline.kill("worker")
        pipeline.publish(records[len(records) // 2:])
        pipeline.wait_caught_up()
        pipeline.assert_exact(expected)
        assert second.alive() and third.alive()
        # the survivors restored the killed worker's partitions in batches, not record by record;
        # a standby copy may be current when its partition moves, leaving 0 records to restore
        count = r"\d+" if standbys else r"[1-9]\d*"
        assert re.search(rf"restored {count} changelog records in batches",
                         log_of(second) + log_of(third))
        if standbys:  # the workers keep copies: the setting reached them. The workload may
            # be caught up by the second alone before the third joins (one member keeps no
            # standby), so wait for the group of two.
            wait_for(lambda: "keeping standby copies" in log_of(second) + log_of(third), 60,
                     "a survivor to keep standby copies")
    finally:
        second.stop()
        third.stop()
        pipeline.stop()


def _stores_on_disk(settings: Settings) -> dict[str, dict[int, dict[bytes, bytes]]]:
    """Every table store in a stopped worker's ``data_dir``, read through the worker's own
    tables: changelog topic -> partition -> key -> value."""
    _, reader = build(settings, Metrics(), fold_streams())
    return {t.topic: {p: dict(t.store.slice(p, None, 10**9))
                      for p in range(settings.topic_partitions)}
            for t in [*reader.tables, reader.positions]}


def test_standby_copies_are_current_once_their_lag_is_zero(settings: Settings,
                                                           tmp_path: Path) -> None:
    """Two workers with one standby copy of each table partition (RocksDB stores): once the
    pipeline has caught up and both workers report a standby lag of 0, every store on either
    worker's disk, active or standby, equals its changelog partition as a fresh recovery reads
    it (docs/design.md, "Fold worker: changelogs in batches"). Without the copies, the first
    worker's stores of the partitions the second took over would have stayed as they were
    then."""
    s = settings.with_(table_store="rocksdb://", worker_standby_replicas=1,
                       worker_batch_records=500)
    pipeline = Pipeline(s, tmp_path / "p")
    first = pipeline.procs["worker"]
    second = extra_worker(s, tmp_path, "worker-2")
    records, expected = generate(LoadSpec(events=6000, students=200, seed=36,
                                          max_record_bytes=s.max_record_bytes))
    try:
        pipeline.start()
        pipeline.publish(records[: len(records) // 3])  # the first worker alone, all partitions
        wait_for(lambda: folded(s) > 500, 120, "the first worker to fold some events")
        second.start()
        wait_for(lambda: all("keeping standby copies" in log_of(w) for w in (first, second)),
                 120, "both workers to keep standby copies")
        pipeline.publish(records[len(records) // 3:])
        pipeline.wait_caught_up()
        pipeline.assert_exact(expected)
        wait_for(lambda: all(metric(w.metrics_port, "xp_worker_standby_records_total") > 0
                             and metric(w.metrics_port, "xp_worker_standby_lag_records") == 0
                             for w in (first, second)), 60, "both standby lags to reach 0")
        assert first.stop() == 0 and second.stop() == 0
        for w in (first, second):
            stores = _stores_on_disk(w.settings)
            for topic, partitions in stores.items():
                recovered, _ = asyncio.run(recover_changelog(s, topic))
                for p, held in partitions.items():
                    want = {k: v for (rp, k), v in recovered.items() if rp == p}
                    assert held == want, (w.log_path.name, topic, p, len(held), len(want))
    finally:
        second.stop()
        pipeline.stop()


def test_dlq_limit_stops_the_worker_before_a_bad_deploy_is_dead_lettered(
        settings: Settings, tmp_path: Path) -> None:
    """XP_WORKER_DLQ_LIMIT: a burst of invalid records passes the share; the worker stops
    advancing, says why, and sets its gauge; nothing of the burst reaches the DLQ past the
    window. Restarted with the limit off, it goes on and dead-letters them."""
    s = settings.with_(worker_dlq_limit=0.5, worker_dlq_window=200)
    pipeline = Pipeline(s, tmp_path / "p")
    good, expected = generate(LoadSpec(events=500, students=50, seed=34, invalid_ratio=0.0,
                                       duplicate_ratio=0.0, conflict_ratio=0.0,
                                       max_record_bytes=s.max_record_bytes))
    bad = [(key, b"{not json") for key, _ in good[:1000]] * 2
    try:
        pipeline.start("worker")
        pipeline.publish(good)
        wait_for(lambda: metric(s.metrics_port, 'xp_records_total{outcome="valid",stage="worker"}')
                 >= expected.valid_unique, 60, "the good records to be folded")
        pipeline.publish(bad)
        wait_for(lambda: metric(s.metrics_port, "xp_worker_dlq_limit_halted") == 1, 60,
                 "the DLQ limit to stop the worker")
        assert "DLQ limit:" in pipeline.logs("worker")
        assert pipeline.procs["worker"].alive()
        dead_lettered = sum(asyncio.run(count_dlq(s)).values())
        assert dead_lettered <= s.worker_dlq_window, dead_lettered
        # The runbook's way on: restart with the limit off; the burst is dead-lettered.
        assert pipeline.procs["worker"].stop() == 0
        pipeline.procs["worker"].settings = s.with_(worker_dlq_limit=0.0)
        pipeline.start("worker")
        asyncio.run(lag.wait_caught_up(s, [(s.worker_group, s.xp_topic)], 60))
        # distinct source records (the DLQ's offsets also count transaction markers)
        assert sum(asyncio.run(count_dlq(s)).values()) == len(bad)
    finally:
        pipeline.stop()


def test_a_worker_paused_past_its_session_does_not_write_for_partitions_it_lost(
        settings: Settings, tmp_path: Path) -> None:
    """A zombie: the first worker is stopped (SIGSTOP) for three session timeouts while the
    second takes its partitions over and folds on. When it runs again it must not write a
    checkpoint for partitions it may have lost: it exits (70: 'stalled' by its own check, or
    'fenced' by the broker) or, if Faust's revoke reaches it first, lets go and rejoins.
    Either way the outcome is exact (guarantees 4, 9)."""
    s = settings.with_(broker_session_timeout=6.0, broker_rebalance_timeout=6.0,
                       worker_batch_records=500)  # 6 s: Kafka's group.min.session.timeout.ms
    pipeline = Pipeline(s, tmp_path / "p")
    second = extra_worker(s, tmp_path, "worker-2")
    records, expected = generate(LoadSpec(events=12000, students=200, seed=35,
                                          max_record_bytes=s.max_record_bytes))
    third = len(records) // 3
    try:
        pipeline.start()
        second.start()
        first = pipeline.procs["worker"]
        for proc in (first, second):
            wait_for(lambda p=proc: "reading partitions [" in log_of(p).replace(
                "reading partitions []", ""), 60, "both workers to hold partitions")
        pipeline.publish(records[:third])
        assert first.proc is not None
        first.proc.send_signal(signal.SIGSTOP)
        pipeline.killed.add("worker")  # it may exit by design once it runs again
        try:
            pipeline.publish(records[third:2 * third])
            time.sleep(3 * s.broker_session_timeout)  # the pause itself: nothing to poll
        finally:
            first.proc.send_signal(signal.SIGCONT)
        pipeline.publish(records[2 * third:])
        wait_for(lambda: not first.alive() or "the worker did not run for" in log_of(first),
                 60, "the first worker to notice its pause")
        pipeline.wait_caught_up()
        if not first.alive():
            assert first.proc.returncode == 70, log_of(first)
            assert "stalled" in log_of(first) or "fenced:" in log_of(first), log_of(first)
        pipeline.assert_exact(expected)
        assert second.alive()
    finally:
        second.stop()
        pipeline.stop()


@pytest.mark.kafka
def test_a_start_that_makes_no_progress_starts_the_worker_again_in_place(
        settings: Settings, tmp_path: Path) -> None:
    """Its only broker stops answering (SIGSTOP) while the worker starts Faust: Faust's group
    join neither fails nor progresses. The start-up deadline (XP_WORKER_RECOVERY_TIMEOUT_SECONDS,
    here 10 s without progress) starts the worker again in place: the same PID, a new process
    image, which reads once the broker answers again. The give-up after 5 starts in a row
    (exit 70) was checked by hand."""
    broker = KafkaCluster(tmp_path / "broker")
    broker.start()
    s = settings.with_(kafka_bootstrap_servers=broker.bootstrap_servers)
    asyncio.run(kafka.pipeline_topics(s))
    worker = extra_worker(s, tmp_path, "stuck", worker_recovery_timeout_seconds=10.0)
    node = broker.nodes[0].proc
    assert node is not None
    try:
        worker.start()
        proc = worker.proc
        assert proc is not None
        wait_for(lambda: "[^Worker]: Starting" in log_of(worker), 60, "Faust to start", 0.05)
        node.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: "no progress for 10 s waiting for " in log_of(worker)
                     and "starting again (2 of 5)" in log_of(worker), 90,
                     "the first start in place")
        finally:
            node.send_signal(signal.SIGCONT)
        wait_for(lambda: "reading partitions [0, 1, 2, 3]" in log_of(worker), 120,
                 "the new process image to read")
        assert proc.poll() is None and worker.proc is proc
    finally:
        worker.stop()
        broker.stop()


def test_json_logs_are_one_object_per_line_with_the_records_position(
        settings: Settings, tmp_path: Path) -> None:
    """XP_LOG_FORMAT=JSON: every line the worker writes (Faust's and aiokafka's loggers
    included) is one JSON object; a conflict names its stage, group, partition and offset."""
    s = settings.with_(log_format="JSON", log_level="INFO")
    pipeline = Pipeline(s, tmp_path / "p")
    student = "3f1e1c55-8d0b-4a5e-9d3e-6d1c2b7a9e01"
    event = {"id": "0b0a4c1e-1111-4d2e-8f00-000000000001", "student_id": student,
             "kind": "quiz", "delta": 5, "created_at": "2026-12-01T10:00:00Z"}
    records = [(student.encode(), orjson.dumps(event)),
               (student.encode(), orjson.dumps({**event, "delta": 7}))]
    try:
        pipeline.start("worker")
        pipeline.publish(records)
        wait_for(lambda: "conflict" in log_of(pipeline.procs["worker"]), 90, "the conflict's line")
    finally:
        pipeline.stop()
    lines = [line for line in log_of(pipeline.procs["worker"]).splitlines() if line.strip()]
    parsed = [orjson.loads(line) for line in lines]  # raises on any line that is not JSON
    assert {p["logger"].split(".")[0] for p in parsed} >= {"faust", "streams"}
    (conflict,) = [p for p in parsed if p["message"].startswith("conflict")]
    assert conflict["stage"] == "worker" and conflict["group"] == s.worker_group
    assert conflict["partition"] == partition_for(student.encode(), s.topic_partitions)
    assert isinstance(conflict["offset"], int) and conflict["level"] == "WARNING"
