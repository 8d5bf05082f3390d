"""``streams status``: the operators' facts in a terminal, for someone without Grafana.

Per consumer group and partition: lag in records and seconds (read from the broker, as
``streams monitor`` does), throughput (committed records per second between two samples),
DLQ records by reason, and a reconciliation of totals against the ledger when every group is
at lag 0. ``--json`` prints the same for scripts.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from streams import topology
from streams.audit.dlq import count_dlq
from streams.audit.reconcile import mismatched_students
from streams.errors import DatabaseUnavailable
from streams.kafka import OffsetReader
from streams.lag import PartitionLag, read_lag
from streams.settings import Settings


@dataclass
class Status:
    """One snapshot of the pipeline."""

    taken_at: float
    """Unix time of the snapshot."""
    lags: list[PartitionLag]
    """Every group's lag per partition."""
    throughput: dict[str, float] = field(default_factory=dict)
    """Committed records per second per group, over the sampling window."""
    dlq: dict[str, int] = field(default_factory=dict)
    """Distinct DLQ records by reason."""
    reconciliation: str = "not run"
    """Result of the reconciliation of xp_totals against the ledger."""
    mismatched_students: int | None = None
    """Students whose totals differ from the ledger (None: not checked)."""

    def to_json(self) -> dict[str, Any]:
        """As a JSON-ready dict."""
        return {
            "taken_at": self.taken_at, "lags": [lag.to_dict() for lag in self.lags],
            "throughput_records_per_second": self.throughput, "dlq": self.dlq,
            "reconciliation": self.reconciliation,
            "mismatched_students": self.mismatched_students,
        }


async def _sample(reader: OffsetReader, settings: Settings) -> list[PartitionLag]:
    lags: list[PartitionLag] = []
    for group, topic in topology.group_topics(settings):
        try:
            lags.extend(await read_lag(reader, group, topic))
        except LookupError:
            continue
    return lags


def _committed(lags: list[PartitionLag]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for lag in lags:
        totals[lag.group] = totals.get(lag.group, 0) + (lag.committed or 0)
    return totals


async def collect(settings: Settings, window_s: float = 2.0,
                  previous: Status | None = None) -> Status:
    """Take a snapshot. Throughput is measured against ``previous`` (``--watch``), else over a
    ``window_s``-second wait between two samples.

    Raises:
        aiokafka.errors.KafkaError: the broker cannot be reached.
    """
    async with OffsetReader(settings) as reader:
        if previous is None:
            first, first_at = await _sample(reader, settings), time.time()
            await asyncio.sleep(window_s)
        else:
            first, first_at = previous.lags, previous.taken_at
        lags, now = await _sample(reader, settings), time.time()
    before, after = _committed(first), _committed(lags)
    status = Status(taken_at=now, lags=lags, throughput={
        g: max(0, after[g] - before.get(g, after[g])) / max(now - first_at, 1e-6) for g in after})
    status.dlq = await count_dlq(settings)
    behind = sum(lag.lag_records for lag in lags)
    if behind:
        status.reconciliation = f"skipped: {behind:,} records in flight (needs lag 0)"
    else:
        try:
            status.mismatched_students = len(
                await asyncio.to_thread(mismatched_students, settings.database_url))
            status.reconciliation = ("ok: totals = SUM(ledger) for every student"
                                     if status.mismatched_students == 0 else
                                     f"MISMATCH: {status.mismatched_students} students")
        except DatabaseUnavailable as exc:
            status.reconciliation = f"database unavailable: {exc}"
    return status


def render(status: Status, console: Console) -> None:
    """Print ``status`` as tables."""
    taken = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status.taken_at))
    console.print(f"[bold]XP Streams status at {taken}[/]")
    for group, topic in dict.fromkeys((lag.group, lag.topic) for lag in status.lags):
        table = Table(title=f"consumer group {group} on {topic}")
        for column in ("partition", "committed", "high watermark", "lag (records)", "lag (s)"):
            table.add_column(column, justify="right")
        for lag in (x for x in status.lags if (x.group, x.topic) == (group, topic)):
            table.add_row(str(lag.partition),
                          "-" if lag.committed is None else f"{lag.committed:,}",
                          f"{lag.high_watermark:,}", f"{lag.lag_records:,}",
                          f"{lag.lag_seconds:.1f}")
        console.print(table)
    summary = Table(show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    for group, rate in status.throughput.items():
        behind = sum(lag.lag_records for lag in status.lags if lag.group == group)
        summary.add_row(f"{group}: lag / throughput", f"{behind:,} records / {rate:,.0f} records/s")
    for reason, count in sorted(status.dlq.items()):
        summary.add_row(f"DLQ: {reason}", f"{count:,}")
    if not status.dlq:
        summary.add_row("DLQ", "empty")
    summary.add_row("reconciliation", status.reconciliation)
    console.print(summary)
