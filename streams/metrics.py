"""Prometheus metric definitions: the one place that creates them (STYLE.md).

:class:`Metrics` takes a registry so tests can pass their own. Names carry their unit.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    """Every metric a pipeline process exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "xp_records_total",
            "Records consumed, by stage and outcome (valid, invalid, duplicate, conflict,"
            " redelivery).",
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
        self.dedupe_expired = Counter(
            "xp_dedupe_expired_total", "Dedupe entries dropped past the horizon.", registry=r
        )
        self.sink_rows = Counter(
            "xp_sink_rows_total",
            "Rows a sink wrote, by sink and result (inserted, present = idempotent hit).",
            ["sink", "result"], registry=r,
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
        self.db_errors = Counter(
            "xp_sink_db_errors_total", "Database errors that paused a sink.", ["sink"], registry=r
        )
        self.last_commit = Gauge(
            "xp_sink_last_commit_timestamp_seconds",
            "Unix time of the sink's last successful database commit.", ["sink"], registry=r,
        )

    def serve(self, port: int) -> None:
        """Serve ``/metrics`` on ``port`` (0 = do not serve)."""
        if port:
            start_http_server(port, registry=self.registry)
