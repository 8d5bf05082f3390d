"""The CI-sized chaos run: every default fault once or more under a live workload,
then guarantees 1-3, 5, 7 checked against the loadgen's expectation; broker faults on Apache
Kafka."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.dev.stack import LocalStack
from streams.lab.chaos import DEFAULT_FAULTS, Chaos
from streams.lab.loadgen import LoadSpec
from streams.settings import Settings
from tests.integration.conftest import streams

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_ci_sized_chaos_run_loses_nothing_and_counts_nothing_twice(
        stack: LocalStack, settings: Settings, tmp_path: Path) -> None:
    spec = LoadSpec(events=20_000, students=500, seed=21,
                    max_record_bytes=settings.max_record_bytes)
    chaos = Chaos(settings.with_(table_store="rocksdb://", db_retry_max_seconds=2.0), spec,
                  tmp_path, DEFAULT_FAULTS, interval_s=3.0, workers=2, rate=1500,
                  outage_s=5.0, storm_repeats=20, poison=200, stack=stack)
    report = chaos.run()
    assert report.problems == []
    assert report.students_mismatched == 0 and report.changelog_differences == 0
    assert report.ledger_rows == report.events_expected > 15_000
    assert report.dlq_records == report.dlq_expected > 200
    applied = {f.name for f in report.faults}
    assert applied == set(DEFAULT_FAULTS), applied
    assert all(f.catch_up_s is not None for f in report.faults), report.faults
    assert report.outage_peak_rss_mib, "no RSS sampled during the PostgreSQL outage"
    assert report.ok


def test_a_kill_storm_on_the_workers_counts_nothing_twice(
        stack: LocalStack, settings: Settings, tmp_path: Path) -> None:
    """kill -9 of a fold worker every ~4 s while the workload runs (guarantees 2-4, 9): every
    kill is a rebalance, often while the last one's recovery still runs. A worker that read
    partitions on a recovery of an older generation counted a few hundred students twice."""
    spec = LoadSpec(events=40_000, students=500, seed=23,
                    max_record_bytes=settings.max_record_bytes)
    chaos = Chaos(settings.with_(table_store="rocksdb://"), spec, tmp_path, ("kill-worker",),
                  interval_s=4.0, workers=2, rate=1500, stack=stack)
    report = chaos.run()
    assert report.problems == []
    assert report.students_mismatched == 0
    assert len(report.faults) >= 5, report.faults
    assert report.ok


def test_chaos_rejects_an_unknown_fault_in_one_line(settings: Settings) -> None:
    result = streams(["lab", "chaos", "--faults", "kill-worker,meteor"], settings)
    assert result.returncode == 2
    err = result.stderr.decode().strip()
    assert "unknown fault meteor" in err and len(err.splitlines()) == 1, err


def _chaos_on(broker: str, faults: str, settings: Settings, tmp_path: Path,
              events: int = 12_000, interval_s: float = 3.0,
              **env: str) -> dict[str, object]:
    """``streams chaos --local`` on a throwaway stack with ``XP_LOCAL_BROKER=broker``; returns
    the JSON report after asserting exit 0."""
    out = tmp_path / "report.json"
    result = streams(["lab", "chaos", "--local", "--events", str(events), "--rate", "1500",
                      "--partitions", "4", "--workers", "2", "--faults", faults,
                      "--fault-interval", str(interval_s), "--json", str(out)], settings,
                     timeout_s=660, XP_LOCAL_BROKER=broker, **env)
    assert result.returncode == 0, result.stdout.decode()[-3000:] + result.stderr.decode()[-2000:]
    report: dict[str, object] = orjson.loads(out.read_bytes())
    return report


@pytest.mark.kafka
@pytest.mark.timeout(720)
def test_one_of_three_apache_kafka_nodes_killed_under_load_loses_nothing(
        settings: Settings, tmp_path: Path) -> None:
    """broker-kill on three Apache Kafka nodes (replication factor 3, min.insync.replicas 2):
    one node killed -9 under load and restarted later; acks=all and the idempotent producer keep
    every acknowledged record, the pipeline never stops."""
    report = _chaos_on("kafka-3", "broker-kill", settings, tmp_path, events=8_000)
    faults = report["faults"]
    assert isinstance(faults, list) and faults
    assert all("of 3 killed -9" in f["detail"] for f in faults), faults
    assert report["students_mismatched"] == 0 and report["broker_limit"] is None
    assert report["ledger_rows"] == report["events_expected"]


@pytest.mark.kafka
@pytest.mark.timeout(720)
def test_a_durable_apache_kafka_node_killed_and_restarted_loses_nothing(
        settings: Settings, tmp_path: Path) -> None:
    """broker-restart on one durable Apache Kafka node: killed -9 and restarted on its log
    dirs once the pipeline runs; nothing it acknowledged is lost and the pipeline resumes by
    itself (docs/design.md: Local stack); a broker that dies while a restarted worker starts
    Faust, or while it recovers its tables, costs that worker a start in place
    (docs/design.md: Fold worker)."""
    report = _chaos_on("kafka", "broker-restart,kill-worker", settings, tmp_path, events=6_000,
                       interval_s=10.0, XP_WORKER_RECOVERY_TIMEOUT_SECONDS="45")
    faults = report["faults"]
    assert isinstance(faults, list)
    restarts = [f for f in faults if f["name"] == "broker-restart"]
    assert restarts and all("restarted on its log dirs" in f["detail"] for f in restarts), faults
    assert report["students_mismatched"] == 0 and report["broker_limit"] is None
    assert report["ledger_rows"] == report["events_expected"]
