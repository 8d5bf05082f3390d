"""Prometheus metric definitions: the one place that creates them.

:class:`Metrics` takes a registry so tests can pass their own. Names carry their unit.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class _Exported:
    """Metrics in their own registry (served with the health endpoints by
    :func:`streams.health.serve`)."""

    registry: CollectorRegistry


class Metrics(_Exported):
    """Every metric a pipeline process (worker, totals writer, ledger sink) exports, and the
    standard ``process_*`` metrics (resident memory, CPU seconds, open files)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.records = Counter(
            "xp_records_total",
            "Records consumed, by stage and outcome (valid, invalid, duplicate, conflict,"
            " redelivery = read again after a crash and already folded).",
            ["stage", "outcome"], registry=r,
        )
        self.dlq = Counter(
            "xp_dlq_records_total", "Records sent to the DLQ, by reason.", ["reason"], registry=r
        )
        self.ledger_checks = Counter(
            "xp_dedupe_ledger_checks_total",
            "Event ids outside the dedupe horizon checked against the ledger, by verdict.",
            ["verdict"], registry=r,
        )
        self.checkpoint_seconds = Histogram(
            "xp_worker_checkpoint_seconds",
            "Time of one worker checkpoint: changelog and DLQ records produced and acknowledged,"
            " positions durable, local store written (seconds).", registry=r,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.checkpoint_records = Histogram(
            "xp_worker_checkpoint_records",
            "Source records folded into one worker checkpoint (several fetched batches under a"
            " backlog, XP_WORKER_CHECKPOINT_RECORDS).", registry=r,
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000),
        )
        self.checkpoint_bytes = Histogram(
            "xp_worker_checkpoint_bytes",
            "Bytes of changelog, DLQ and output records one worker checkpoint sends (its keys and"
            " values; XP_WORKER_CHECKPOINT_BYTES bounds it under a backlog).", registry=r,
            buckets=(1 << 10, 1 << 14, 1 << 17, 1 << 20, 1 << 22, 1 << 24, 1 << 26, 1 << 28),
        )
        self.offset_gaps = Counter(
            "xp_worker_offset_gaps_total",
            "Times a fetched batch of a source partition did not start at the offset after the"
            " previous one (transaction markers, compaction); counted, never sought back.",
            ["topic"], registry=r,
        )
        self.dlq_limit_halted = Gauge(
            "xp_worker_dlq_limit_halted",
            "1 when the worker stopped advancing because the share of invalid records passed"
            " XP_WORKER_DLQ_LIMIT (docs/runbook.md).", registry=r,
        )
        self.rocksdb_memory = Gauge(
            "xp_worker_rocksdb_memory_bytes",
            "Memory of the worker's RocksDB stores in use: their one shared block cache with"
            " the write buffers charged to it, at most about XP_ROCKSDB_MEMORY_MB (bytes).",
            registry=r,
        )
        self.standby_records = Counter(
            "xp_worker_standby_records_total",
            "Changelog records applied to the worker's standby copies of table partitions"
            " (XP_WORKER_STANDBY_REPLICAS).", registry=r,
        )
        self.standby_lag = Gauge(
            "xp_worker_standby_lag_records",
            "Changelog records the worker's standby copies are behind the committed end of their"
            " changelogs, summed (NaN until each was fetched once; 0 with none).", registry=r,
        )
        self.dedupe_expired = Counter(
            "xp_dedupe_expired_total", "Dedupe entries dropped past the horizon.", registry=r
        )
        self.grant_claims = Counter(
            "xp_grant_claims_total",
            "Claims the grant stream decided, by type, outcome and reason (none: '').",
            ["type", "outcome", "reason"], registry=r,
        )
        self.grant_policy_records = Counter(
            "xp_grant_policy_records_total",
            "Records of the policies topic the grant stream read, by result (applied, refused:"
            " the reason).", ["result"], registry=r,
        )
        self.grant_policy_lag = Gauge(
            "xp_grant_policy_lag_records",
            "Records of the policies topic the grant stream has not read yet.", registry=r,
        )
        self.grant_policy_paused = Gauge(
            "xp_grant_policy_paused",
            "1 while the grant stream holds claims back until it has read the policies topic to"
            " its end (claims are decided only under every policy published before them).",
            registry=r,
        )
        self.grant_tz_changes = Counter(
            "xp_grant_tz_changes_total",
            "Reward time-zone change requests decided, by outcome (accepted, rejected).",
            ["outcome"], registry=r,
        )
        self.grant_hints = Counter(
            "xp_grant_hints_total",
            "Claims decided with a hint (tz_mismatch: the client's zone is not the reward zone;"
            " clock_skew: the client clock is off by more than the policy allows;"
            " unknown_segment: no override for the learner's segment, the base applies).",
            ["hint"], registry=r,
        )
        self.grant_conflicts = Counter(
            "xp_grant_conflicts_total",
            "Awards (daily_login XP events) whose id the worker had seen with other content: two"
            " deciders of one reward day disagreed; the first award stands.", registry=r,
        )
        self.sink_rows = Counter(
            "xp_sink_rows_total",
            "Rows a sink wrote, by sink and result (inserted, present = idempotent hit).",
            ["sink", "result"], registry=r,
        )
        self.sink_shared_ids = Counter(
            "xp_sink_shared_ids_total",
            "Ledger rows inserted whose event id another owner's row holds too: a client sent "
            "one id for two students (two events, each counted for its student; docs/design.md"
            " Contracts).", ["sink"], registry=r,
        )
        self.sink_batch_records = Histogram(
            "xp_sink_batch_records", "Records per sink batch.", ["sink"], registry=r,
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000),
        )
        self.sink_batch_seconds = Histogram(
            "xp_sink_batch_write_seconds", "Time to write and commit one sink batch (seconds).",
            ["sink"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.sink_refused = Counter(
            "xp_sink_refused_total",
            "Source records a sink sent to the sink DLQ because PostgreSQL refused their rows, "
            "by sink and reason (the SQLSTATE's name: check_violation, string_data_right_"
            "truncation, ...).", ["sink", "reason"], registry=r,
        )
        self.db_errors = Counter(
            "xp_sink_db_errors_total", "Database errors that paused a sink.", ["sink"], registry=r
        )
        self.last_commit = Gauge(
            "xp_sink_last_commit_timestamp_seconds",
            "Unix time of the sink's last successful database commit.", ["sink"], registry=r,
        )

        self.freshness = Gauge(
            "xp_newest_event_created_timestamp_seconds",
            "created_at of the newest event a stage has applied (Unix seconds); freshness is"
            " time() minus this.", ["stage"], registry=r,
        )
        self.totals_newest = Gauge(
            "xp_totals_newest_written_timestamp_seconds",
            "updated_at of the newest total the totals writer committed (Unix seconds).",
            registry=r,
        )


class MonitorMetrics(_Exported):
    """What ``streams monitor`` exports: consumer lag read from the broker, and reconciliation.

    Lag comes from the broker's committed offsets, not from inside the consumers, so it stays
    right while a group rebalances or its consumers are down.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        labels = ["group", "topic", "partition"]
        self.lag_records = Gauge(
            "xp_consumer_lag_records",
            "High watermark minus committed offset (records).", labels, registry=r)
        self.lag_seconds = Gauge(
            "xp_consumer_lag_seconds",
            "Age of the oldest record not yet committed (seconds; 0 when caught up).", labels,
            registry=r)
        self.committed = Gauge(
            "xp_consumer_committed_offset", "The group's committed offset.", labels, registry=r)
        self.high_watermark = Gauge(
            "xp_topic_high_watermark", "Offset after the last record of a partition.",
            ["topic", "partition"], registry=r)
        self.last_commit = Gauge(
            "xp_consumer_group_last_commit_timestamp_seconds",
            "When the monitor last saw the group's committed offsets advance (Unix seconds).",
            ["group"], registry=r)
        self.last_sample = Gauge(
            "xp_monitor_last_sample_timestamp_seconds",
            "When the monitor last read the offsets successfully (Unix seconds).", registry=r)
        self.sample_errors = Counter(
            "xp_monitor_sample_errors_total", "Failed reads of offsets or the database.",
            ["what"], registry=r)
        self.mismatched, self.last_reconcile = reconcile_gauges(r)


def reconcile_gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge]:
    """The two gauges of a reconciliation (``streams monitor`` and ``streams reconcile --every``
    both export them): mismatched students, and when it last ran."""
    mismatched = Gauge(
        "xp_reconcile_mismatched_students",
        "Students whose xp_totals differ from SUM(xp_events.delta) or the ledger count, not"
        " explained by events in flight, at the last reconciliation.", registry=registry)
    last_run = Gauge(
        "xp_reconcile_last_run_timestamp_seconds",
        "When the last reconciliation finished (Unix seconds).", registry=registry)
    return mismatched, last_run


class ReconcileMetrics(_Exported):
    """What ``streams reconcile --every`` exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.mismatched, self.last_run = reconcile_gauges(r)
        self.unconfirmed = Gauge(
            "xp_reconcile_unconfirmed_students",
            "Students that differed while the pipeline did not catch up in time to re-check.",
            registry=r)
        self.duration = Gauge(
            "xp_reconcile_duration_seconds", "How long the last reconciliation took (seconds).",
            registry=r)
        self.errors = Counter(
            "xp_reconcile_errors_total", "Reconciliations that failed (database or broker).",
            registry=r)
