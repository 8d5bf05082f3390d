"""``streams status``: the operators' facts in a terminal, for someone without Grafana.

One table, a row per stage of the topology (docs/design.md, Operations): lag in records and
seconds (read from the broker, as ``streams monitor`` does), throughput (committed records per
second between two samples) and the age of the last commit (sinks: from PostgreSQL; any
group: 0 when its offsets moved during the sample); then the DLQ by reason and a
reconciliation of totals against the ledger when every group is at lag 0. ``--partitions``
adds a table per stage with its partitions; ``--json`` prints everything for scripts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from streams import kafka, topology
from streams.audit.dlq import count_dlq
from streams.audit.reconcile import mismatched_students
from streams.db.connect import connect, mapped_errors
from streams.db.queries import query
from streams.errors import DatabaseUnavailable
from streams.kafka import OffsetReader
from streams.lag import PartitionLag, read_lag
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Status:
    """One snapshot of the pipeline."""

    taken_at: float
    """Unix time of the snapshot."""
    lags: list[PartitionLag]
    """Every group's lag per partition."""
    throughput: dict[str, float] = field(default_factory=dict)
    """Committed records per second per group, over the sampling window."""
    stage_throughput: dict[str, float] = field(default_factory=dict)
    """The same per ``"<group> <topic>"``."""
    dlq: dict[str, int] = field(default_factory=dict)
    """Distinct DLQ records by reason."""
    reconciliation: str = "not run"
    """Result of the reconciliation of xp_totals against the ledger."""
    mismatched_students: int | None = None
    """Students whose totals differ from the ledger (None: not checked)."""
    last_commit_s: dict[str, float] = field(default_factory=dict)
    """Seconds since each group last committed, where known."""
    stages: list[tuple[str, str, str]] = field(default_factory=list)
    """(stage name, group, topic) in data-flow order (:func:`streams.topology.stages`)."""

    def to_json(self) -> dict[str, Any]:
        """As a JSON-ready dict."""
        return {
            "taken_at": self.taken_at, "lags": [lag.to_dict() for lag in self.lags],
            "throughput_records_per_second": self.throughput,
            "stage_throughput_records_per_second": self.stage_throughput, "dlq": self.dlq,
            "reconciliation": self.reconciliation,
            "mismatched_students": self.mismatched_students,
            "last_commit_seconds": self.last_commit_s,
        }


async def _sample(reader: OffsetReader, settings: Settings) -> list[PartitionLag]:
    lags: list[PartitionLag] = []
    for group, topic in topology.group_topics(settings):
        try:
            lags.extend(await read_lag(reader, group, topic))
        except LookupError:
            continue
    return lags


def _committed(lags: list[PartitionLag]) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = {}
    for lag in lags:
        key = (lag.group, lag.topic)
        totals[key] = totals.get(key, 0) + (lag.committed or 0)
    return totals


async def collect(settings: Settings, window_s: float = 2.0,
                  previous: Status | None = None) -> Status:
    """Take a snapshot. Throughput is measured against ``previous`` (``--watch``), else over a
    ``window_s``-second wait between two samples.

    Raises:
        BrokerUnavailable: no broker answers (one line, :func:`streams.kafka.wait_for_brokers`).
        DatabaseUnavailable: PostgreSQL cannot be reached.
    """
    await kafka.wait_for_brokers(settings.with_(broker_wait_seconds=0), log)
    ages = await asyncio.to_thread(_commit_ages, settings.database_url)
    async with OffsetReader(settings) as reader:
        if previous is None:
            first, first_at = await _sample(reader, settings), time.time()
            await asyncio.sleep(window_s)
        else:
            first, first_at = previous.lags, previous.taken_at
        lags, now = await _sample(reader, settings), time.time()
    before, after = _committed(first), _committed(lags)
    rates = {k: max(0, after[k] - before.get(k, after[k])) / max(now - first_at, 1e-6)
             for k in after}
    status = Status(taken_at=now, lags=lags)
    for (group, topic), rate in rates.items():
        status.throughput[group] = status.throughput.get(group, 0.0) + rate
        status.stage_throughput[f"{group} {topic}"] = rate
    status.last_commit_s = {**ages, **{g: 0.0 for (g, _t) in after
                                       if after[(g, _t)] != before.get((g, _t))}}
    present = {(lag.group, lag.topic) for lag in lags}
    status.stages = [(st.name, st.group, st.topic) for st in topology.stages(settings)
                     if (st.group, st.topic) in present]
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


def _commit_ages(url: str) -> dict[str, float]:
    """Seconds since each sink group last stored offsets in PostgreSQL.

    Raises:
        DatabaseUnavailable: PostgreSQL cannot be reached.
    """
    with connect(url) as conn, mapped_errors(url):
        return {group: float(age) for group, age in conn.execute(query("commit_ages"))}


def render(status: Status, console: Console, partitions: bool = False) -> None:
    """Print ``status``: one table of stages, the DLQ and the reconciliation; with
    ``partitions`` also a table per stage with its partitions."""
    taken = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status.taken_at))
    console.print(f"[bold]XP Streams status at {taken}[/]")
    table = Table(title="stages")
    for column in ("stage (topic)", "consumer group"):
        table.add_column(column)
    for column in ("lag (records)", "lag (s)", "records/s", "last commit (s ago)"):
        table.add_column(column, justify="right")
    for name, group, topic in status.stages:
        mine = [lag for lag in status.lags if (lag.group, lag.topic) == (group, topic)]
        age = status.last_commit_s.get(group)
        table.add_row(f"{name} ({topic})", group, f"{sum(x.lag_records for x in mine):,}",
                      f"{max((x.lag_seconds for x in mine), default=0.0):.1f}",
                      f"{status.stage_throughput.get(f'{group} {topic}', 0.0):,.0f}",
                      "-" if age is None else f"{age:,.0f}")
    console.print(table)
    if partitions:
        _render_partitions(status, console)
    summary = Table(show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    for reason, count in sorted(status.dlq.items()):
        summary.add_row(f"DLQ: {reason}", f"{count:,}")
    if not status.dlq:
        summary.add_row("DLQ", "empty")
    summary.add_row("reconciliation", status.reconciliation)
    console.print(summary)


def _render_partitions(status: Status, console: Console) -> None:
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
