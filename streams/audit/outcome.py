"""Check what the pipeline produced against a workload's expected outcome (loadgen).

Reads the real PostgreSQL tables and the real DLQ topic; used by ``streams demo`` and the tests.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from aiokafka.structs import TopicPartition

from streams import kafka
from streams.audit.reconcile import Mismatch, mismatched_students
from streams.db.connect import connect, mapped_errors
from streams.loadgen import Expected
from streams.settings import Settings


@dataclass
class Outcome:
    """What the database and the DLQ hold after a run."""

    ledger_rows: int = 0
    totals_rows: int = 0
    ledger_students: int = 0
    dlq: dict[str, int] = field(default_factory=dict)
    ledger_vs_totals: list[Mismatch] = field(default_factory=list)
    expected_vs_totals: list[str] = field(default_factory=list)
    """Students whose totals row differs from the expected outcome (with the difference)."""

    def problems(self, expected: Expected) -> list[str]:
        """Every way this outcome differs from ``expected`` (empty: all guarantees hold)."""
        found = []
        if self.ledger_rows != expected.valid_unique:
            found.append(f"ledger has {self.ledger_rows} rows, expected {expected.valid_unique}")
        if self.dlq != expected.invalid:
            found.append(f"DLQ holds {self.dlq}, expected {expected.invalid}")
        if self.ledger_vs_totals:
            found.append(f"{len(self.ledger_vs_totals)} students: xp_totals != SUM(ledger delta),"
                         f" e.g. {self.ledger_vs_totals[:3]}")
        if self.expected_vs_totals:
            found.append(f"{len(self.expected_vs_totals)} students differ from the expected "
                         f"totals, e.g. {self.expected_vs_totals[:3]}")
        return found


async def count_dlq(settings: Settings, timeout_s: float = 10.0) -> dict[str, int]:
    """Count the distinct dead-lettered source records by their ``reason`` header.

    The DLQ is at-least-once: after a worker crash a record may be dead-lettered twice, so
    records are told apart by their source position headers (topic, partition, offset).
    Reads the whole DLQ without joining a consumer group.
    """
    ends = await kafka.high_watermarks(settings, settings.dlq_topic)
    client = kafka.consumer(settings, None)
    await client.start()
    sources: dict[tuple[bytes, ...], str] = {}
    try:
        tps = [TopicPartition(settings.dlq_topic, p) for p, end in ends.items() if end > 0]
        if not tps:
            return {}
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        remaining = {tp: ends[tp.partition] for tp in tps}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while remaining and loop.time() < deadline:
            for tp, records in (await client.getmany(timeout_ms=500)).items():
                for r in records:
                    if r.offset < ends[tp.partition]:
                        h = dict(r.headers)
                        source = (h.get("source_topic", b""), h.get("source_partition", b""),
                                  h.get("source_offset", b""))
                        sources.setdefault(source, h.get("reason", b"?").decode())
                if records and records[-1].offset + 1 >= ends[tp.partition]:
                    remaining.pop(tp, None)
        return dict(Counter(sources.values()))
    finally:
        await client.stop()


def read_outcome(settings: Settings, expected: Expected) -> Outcome:
    """Read ledger, totals and DLQ, and compare the totals with ``expected`` per student."""
    url = settings.database_url
    out = Outcome()
    with connect(url) as conn, mapped_errors(url):
        out.ledger_rows, out.ledger_students = conn.execute(
            "SELECT count(*), count(DISTINCT student_id) FROM xp_events").fetchone() or (0, 0)
        totals = {str(sid): [total, games, kind] for sid, total, games, kind in conn.execute(
            "SELECT student_id, total_xp, games_played, last_game_type FROM xp_totals")}
    out.totals_rows = len(totals)
    out.ledger_vs_totals = mismatched_students(url)
    for sid, want in expected.students.items():
        got = totals.get(sid)
        if got != want:
            out.expected_vs_totals.append(f"{sid}: got {got}, expected {want}")
    for sid in totals.keys() - expected.students.keys():
        out.expected_vs_totals.append(f"{sid}: unexpected totals row {totals[sid]}")
    out.dlq = asyncio.run(count_dlq(settings))
    return out
