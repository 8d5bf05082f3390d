"""Zombie workers on Apache Kafka: a worker that lost its partitions without noticing must write
nothing after their new owner started (docs/design.md, "Fold worker: checkpoints", guarantee 4).

Each test opens the window on purpose with a failpoint in the first worker's first checkpoint,
lets a second worker take every partition and fold the whole backlog, then lets the first go
on, and ends with ``streams audit-changelogs``: the tables recovered from their changelogs, as
a worker with an empty store would restore them, must equal the fold of the ledger. The
running worker's store and PostgreSQL's version guard would hide a stale changelog value;
only that fresh recovery shows it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streams import kafka, lag, topics
from streams.dev.kafka_cluster import KafkaCluster
from streams.lab.loadgen import LoadSpec, generate
from streams.settings import Settings
from tests.integration.conftest import Pipeline, extra_worker, log_of, streams, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def zombie_run(settings: Settings, tmp_path: Path, failpoint: str, seed: int,
               resume: str | None = None,
               first_changes: dict[str, object] | None = None,
               held: Callable[[], None] | None = None,
               released: Callable[[], None] | None = None) -> None:
    """A backlog; the first worker alone with ``failpoint`` in its first checkpoint (and
    ``first_changes`` to its settings); ``held`` runs once it is held there; a second worker
    takes over and folds everything to lag 0 while the first is held; then the first goes on
    (``resume``: a signal the test sends, else the failpoint's own pause ends; ``released``
    runs after that) and must end without a trace in the changelogs; the audit and the
    outcome are exact."""
    s = settings.with_(broker_session_timeout=6.0, broker_rebalance_timeout=6.0,
                       worker_batch_records=300)
    pipeline = Pipeline(s, tmp_path / "p")
    first = pipeline.procs["worker"]
    first.settings = s.with_(worker_failpoint=failpoint, **(first_changes or {}))
    second = extra_worker(s, tmp_path, "worker-2")
    records, expected = generate(LoadSpec(events=4000, students=100, seed=seed,
                                          max_record_bytes=s.max_record_bytes))
    try:
        pipeline.publish(records)
        pipeline.start()
        wait_for(lambda: "failpoint folded: " in log_of(first), 90,
                 "the first worker to reach its failpoint")
        pipeline.killed.add("worker")  # it ends by design
        if held is not None:
            held()
        second.start()
        wait_for(lambda: "reading partitions [0, 1, 2, 3]" in log_of(second), 120,
                 "the second worker to take every partition")
        asyncio.run(lag.wait_caught_up(s, [(s.worker_group, s.xp_topic)], 120))
        assert "failpoint folded: resumed" not in log_of(first), \
            "the first worker went on before the second caught up: the window was not open"
        assert first.proc is not None
        if resume is not None:
            first.proc.send_signal(getattr(signal, resume))
        if released is not None:
            released()
        wait_for(lambda: not first.alive(), 120, "the first worker to end")
        pipeline.wait_caught_up()
        audit = streams(["audit-changelogs", "--json"], s)
        outcome = orjson.loads(audit.stdout)
        assert audit.returncode == 0 and outcome["ok"], (
            f"{len(outcome['differences'])} students differ after a fresh recovery, e.g. "
            f"{outcome['differences'][:3]}; first worker: {log_of(first)[-1500:]}")
        # fenced by the broker (ProducerFenced), or by its own stall check before the commit
        assert first.proc.returncode == 70, log_of(first)[-3000:]
        pipeline.assert_exact(expected)
        assert second.alive()
    finally:
        second.stop()
        pipeline.stop()


def test_a_checkpoint_held_past_a_rebalance_is_fenced(settings: Settings,
                                                      tmp_path: Path) -> None:
    """(A) The first worker's checkpoint is held for 60 s with its event loop running (as a
    ledger look-up during a PostgreSQL outage holds it): its revoke waits, the group evicts
    it, the second worker folds everything. When the hold ends, the first must not write its
    changelog records; had it written them and died before its position (``produced:1``), the
    changelog would keep its stale totals for good."""
    zombie_run(settings, tmp_path, "folded:1:60,produced:1", seed=41)


def test_a_worker_stopped_inside_a_fold_is_fenced(settings: Settings, tmp_path: Path) -> None:
    """(B) The first worker stops (SIGSTOP) inside its first checkpoint, after the fold and
    before the changelog step, past its session timeout; the second worker takes over. On
    SIGCONT the first runs on from where it stopped before its stall watcher has run: it must
    not write its changelog records."""
    zombie_run(settings, tmp_path, "folded:1:stop", seed=43, resume="SIGCONT")


@pytest.mark.kafka
def test_a_worker_cut_from_its_group_coordinator_is_fenced(settings: Settings,
                                                           tmp_path: Path) -> None:
    """(C) Three nodes. The first worker reaches every node through cuttable proxies; while
    its first checkpoint is held (60 s, event loop running), its path to the node of its
    group coordinator is cut as a network partition would: it reaches the other nodes, its
    generation never changes and its loop never stalls, but the group evicts it and the
    second worker takes over. When the hold ends it must write nothing."""
    cluster = KafkaCluster(tmp_path / "kafka", nodes=3, proxied=True)
    cluster.start()
    try:
        s = settings.with_(kafka_bootstrap_servers=cluster.bootstrap_servers,
                           topic_replication_factor=3)
        asyncio.run(kafka.pipeline_topics(s))

        coordinator: list[int] = []
        first_log = tmp_path / "p" / "worker.log"

        def cut() -> None:
            coordinator.append(asyncio.run(cluster.coordinator(
                topics.tables_group(s.worker_group))))
            cluster.cut(coordinator[0])

        def heal() -> None:
            # the partition heals once the first worker runs on (its sends to the cut node
            # would otherwise wait for ever): whatever it still tries to write then lands
            wait_for(lambda: "failpoint folded: resumed" in first_log.read_text(), 90,
                     "the first worker's hold to end")
            cluster.restore(coordinator[0])

        zombie_run(s, tmp_path, "folded:1:60,produced:1", seed=47,
                   first_changes={"kafka_bootstrap_servers": cluster.bootstrap_for("PROXIED")},
                   held=cut, released=heal)
    finally:
        cluster.stop()


def test_a_worker_stopped_inside_a_rebalance_does_not_fence_the_live_owner(
        settings: Settings, tmp_path: Path) -> None:
    """(D) The first worker reads every partition. A second joins and stops (SIGSTOP) once the
    tables of its half are recovered, before it makes their producers, past its session
    timeout: the group gives every partition back to the first. On SIGCONT the second runs on
    inside the assignment the group replaced; making its producers then fenced the first, the
    live owner, which exited at its next checkpoint (a chaos run's pause-worker fault found
    it). The second must exit instead, and the first go on."""
    s = settings.with_(broker_session_timeout=6.0, broker_rebalance_timeout=6.0,
                       worker_batch_records=300)
    pipeline = Pipeline(s, tmp_path / "p")
    first = pipeline.procs["worker"]
    second = extra_worker(s, tmp_path, "worker-2", worker_failpoint="recovered:1:stop")
    records, expected = generate(LoadSpec(events=4000, students=100, seed=49,
                                          max_record_bytes=s.max_record_bytes))
    half = len(records) // 2
    every = "reading partitions [0, 1, 2, 3]"
    try:
        pipeline.start()
        pipeline.publish(records[:half])
        wait_for(lambda: every in log_of(first), 90, "the first worker to read every partition")
        second.start()
        wait_for(lambda: "failpoint recovered: stopping" in log_of(second), 120,
                 "the second worker to stop inside its assignment")
        taken = log_of(first).count(every)
        wait_for(lambda: log_of(first).count(every) > taken, 120,
                 "the first worker to take every partition back")
        assert second.proc is not None
        second.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: not second.alive(), 60, "the second worker to exit")
        assert second.proc.returncode == 70, log_of(second)[-2000:]
        assert "not taking partitions" in log_of(second)
        pipeline.publish(records[half:])
        pipeline.wait_caught_up()
        pipeline.assert_exact(expected)
        assert first.alive(), log_of(first)[-3000:]
    finally:
        second.stop()
        pipeline.stop()
