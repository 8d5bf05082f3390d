"""``streams replay``: read a range of the XP topic for an audit and compare it with PostgreSQL.

Reads with manual partition assignment and no consumer group, so no committed offset moves
Records are validated with :func:`streams.events.decode_record` and deduplicated with
:func:`streams.dedupe.classify` and folded with :func:`streams.xp.fold.fold`, exactly
as the worker does, then compared per student with:

- the ledger rows whose provenance (topic, partition, offset) lies in the range read: the event
  ids present in one and not the other, and the XP sums;
- ``xp_totals`` against the ledger's all-time ``SUM(delta)`` and ``count(*)`` (docs/design.md,
  guarantee 3), and, when the replay covers every partition from offset 0 to its end, against
  the replayed total itself.

An event (id and student, docs/design.md Contracts) the replay accepts that the ledger holds at
a position before the range is a
duplicate of an earlier event (the replay could not see the first copy), not a difference.
Records beyond the ledger sink's stored position are in flight, not missing.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from aiokafka.structs import TopicPartition

from streams import kafka
from streams.audit.ranges import PartitionRange, RangeSpec, resolve
from streams.db.connect import connect, mapped_errors
from streams.db.queries import query
from streams.dedupe import Sighting, Verdict, classify
from streams.errors import InvalidEvent
from streams.events import XpEvent, decode_record
from streams.settings import Settings
from streams.xp.fold import Totals, fold

EVENT_COLUMNS = ("partition", "offset", "record_index", "timestamp_ms", "id", "student_id",
                 "kind", "delta", "created_at", "word_set_id", "homework_id", "metadata")
"""Columns of the replayed events file (CSV header; JSON lines use the same names)."""

TOTALS_COLUMNS = ("student_id", "replayed_xp", "replayed_events", "games_played",
                  "last_game_type", "ledger_range_xp", "ledger_range_events", "ledger_xp",
                  "ledger_events", "totals_xp", "totals_events")
"""Columns of the per-student totals file."""


@dataclass
class StudentAudit:
    """One student's figures in a replay report (XP and event counts)."""

    student_id: str
    replayed_xp: int = 0
    replayed_events: int = 0
    games_played: int = 0
    last_game_type: str | None = None
    ledger_range_xp: int = 0
    """SUM(delta) of the ledger rows read from the replayed range (XP)."""
    ledger_range_events: int = 0
    ledger_xp: int | None = None
    """All-time SUM(delta) in the ledger (XP); None: no ledger row."""
    ledger_events: int | None = None
    totals_xp: int | None = None
    """``xp_totals.total_xp`` (XP); None: no row."""
    totals_events: int | None = None
    """``xp_totals.version``: events applied."""
    only_in_replay: list[str] = field(default_factory=list)
    """Accepted event ids of the range the ledger does not hold."""
    only_in_ledger: list[str] = field(default_factory=list)
    """Ledger event ids with provenance in the range that the replay did not accept."""

    def differences(self, full_coverage: bool) -> list[str]:
        """What disagrees, one short phrase each (empty: this student is consistent)."""
        found = []
        if self.only_in_replay:
            found.append(f"{len(self.only_in_replay)} replayed events not in the ledger")
        if self.only_in_ledger:
            found.append(f"{len(self.only_in_ledger)} ledger events not replayed")
        if self.replayed_xp != self.ledger_range_xp:
            found.append(f"replayed {self.replayed_xp} XP != ledger {self.ledger_range_xp} XP "
                         "over the range")
        if (self.totals_xp, self.totals_events) != (self.ledger_xp, self.ledger_events):
            found.append(f"xp_totals {self.totals_xp} XP/{self.totals_events} events != ledger "
                         f"{self.ledger_xp} XP/{self.ledger_events} events")
        if full_coverage and self.totals_xp != self.replayed_xp:
            found.append(f"xp_totals {self.totals_xp} XP != replayed {self.replayed_xp} XP")
        return found


@dataclass
class ReplayReport:
    """Everything a replay found; :meth:`to_dict` is the ``--json`` / ``--report`` form."""

    topic: str
    range: str
    partitions: list[PartitionRange]
    records_read: int = 0
    """Records in the range (before validation and the student filter)."""
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    duplicates_before_range: int = 0
    """Accepted in the range but held by the ledger from an earlier position: a duplicate of
    an event before the range, dropped as the pipeline dropped it."""
    in_flight: int = 0
    """Accepted events past the ledger sink's stored position: not yet in the ledger."""
    invalid: dict[str, int] = field(default_factory=dict)
    students: dict[str, StudentAudit] = field(default_factory=dict)

    @property
    def full_coverage(self) -> bool:
        """True when every partition was read from offset 0 (none dropped) to its end."""
        return all(r.start == 0 and not r.dropped and r.stopped_at is None
                   for r in self.partitions)

    @property
    def dropped_partitions(self) -> list[PartitionRange]:
        """Partitions whose requested range began before the broker's log start."""
        return [r for r in self.partitions if r.dropped]

    def differing(self) -> dict[str, list[str]]:
        """Students with differences, and what differs for each."""
        result = {}
        for sid, s in self.students.items():
            diff = s.differences(self.full_coverage)
            if diff:
                result[sid] = diff
        return result

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["full_coverage"] = self.full_coverage
        d["differences"] = self.differing()
        d["students"] = list(d["students"].values())
        return d


class Replay:
    """One replay of ``settings.xp_topic`` over ``spec``, optionally for some students only.

    Args:
        settings: brokers, database, topic, record size limit.
        spec: the range.
        students: student ids (any case) to keep; empty = all.
        events_out: writer of accepted events (see :class:`EventWriter`), or None.
        on_progress: called with (records read so far, records in the range) every batch.
    """

    def __init__(self, settings: Settings, spec: RangeSpec, students: frozenset[str] = frozenset(),
                 events_out: EventWriter | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> None:
        self.settings = settings
        self.limits = settings.limits()
        self.spec = spec
        self.students = frozenset(s.lower() for s in students)
        self._keys = frozenset(s.encode() for s in self.students)
        self.events_out = events_out
        self.on_progress = on_progress
        self._seen: dict[tuple[str, str], Sighting] = {}
        self._totals: dict[str, Totals] = {}
        self._accepted: dict[tuple[str, str], tuple[int, int, int]] = {}
        """Accepted event (id, student) -> (delta, partition, offset)."""

    async def run(self) -> ReplayReport:
        """Read the range, then compare with PostgreSQL.

        Raises:
            LookupError: the topic does not exist.
            ValueError: the range names partitions the topic does not have.
            DatabaseUnavailable: PostgreSQL cannot be reached.
        """
        topic = self.settings.xp_topic
        client = kafka.consumer(self.settings, None, fetch_max_wait_ms=100)
        await kafka.start(client)
        try:
            async with kafka.OffsetReader(self.settings) as reader:
                ranges = await resolve(client, reader, topic, self.spec)
            report = ReplayReport(topic, self.spec.describe(), ranges)
            await self._scan(client, ranges, report)
        finally:
            await client.stop()
        self._compare(report)
        return report

    async def _scan(self, client: Any, ranges: list[PartitionRange], report: ReplayReport) -> None:
        topic = self.settings.xp_topic
        count = len(ranges)
        todo = {TopicPartition(topic, r.partition): r for r in ranges if r.start < r.end}
        total = sum(r.end - r.start for r in todo.values())
        if not todo:
            return
        client.assign(list(todo))
        for tp, r in todo.items():
            client.seek(tp, r.start)
        since_ms = None if self.spec.since is None else self.spec.since * 1000
        until_ms = None if self.spec.until is None else self.spec.until * 1000
        started: set[int] = set()
        invalid: Counter[str] = Counter()
        while todo:
            batch = await client.getmany(*todo, timeout_ms=1000)
            for tp, records in batch.items():
                if tp not in todo:
                    continue
                r = todo[tp]
                for rec in records:
                    if rec.offset >= r.end:
                        break
                    if r.partition not in started:
                        if since_ms is not None and rec.timestamp < since_ms:
                            r.start = rec.offset + 1
                            continue
                        started.add(r.partition)
                    if until_ms is not None and rec.timestamp >= until_ms:
                        r.stopped_at = rec.offset
                        break
                    report.records_read += 1
                    if self._keys and (rec.key or b"").lower() not in self._keys:
                        continue
                    try:
                        events = decode_record(rec.key, rec.value, self.limits,
                                               (r.partition, count), rec.timestamp / 1000)
                    except InvalidEvent as exc:
                        invalid[exc.reason] += 1
                        continue
                    for index, event in enumerate(events):
                        self._accept(event, r.partition, rec.offset, index, rec.timestamp, report)
                if r.stopped_at is not None or (records and records[-1].offset + 1 >= r.end):
                    todo.pop(tp)
            for tp in [tp for tp in todo if tp not in batch]:
                if await client.position(tp) >= todo[tp].end:  # e.g. control records at the end
                    todo.pop(tp)
            if self.on_progress is not None:
                self.on_progress(report.records_read, total)
        report.invalid = dict(invalid)

    def _accept(self, event: XpEvent, partition: int, offset: int, index: int,
                timestamp_ms: int, report: ReplayReport) -> None:
        identity = (event.id, event.student_id)
        seen = self._seen.get(identity)
        verdict = classify(seen, event.fingerprint, partition, offset, index)
        if verdict is Verdict.DUPLICATE:
            report.duplicates += 1
            return
        if verdict is Verdict.CONFLICT:
            report.conflicts += 1
            return
        created = event.created_s
        self._seen[identity] = Sighting(event.fingerprint, partition, offset, created, created,
                                        index)
        self._accepted[identity] = (event.delta, partition, offset)
        self._totals[event.student_id] = fold(self._totals.get(event.student_id), event,
                                              partition, offset, created, index)
        if self.events_out is not None:
            self.events_out.write(event, partition, offset, index, timestamp_ms)

    def _compare(self, report: ReplayReport) -> None:
        url, topic = self.settings.database_url, self.settings.xp_topic
        with connect(url) as conn, mapped_errors(url):
            sink_next: dict[int, int] = dict(conn.execute(query("load_offsets"), {
                "group": self.settings.ledger_group, "topic": topic}).fetchall())
            in_range: dict[tuple[str, str], tuple[int, int, int]] = {}
            for r in report.partitions:
                rows = conn.execute(query("ledger_in_range"), {
                    "topic": topic, "partition": r.partition, "start": r.start,
                    "end": r.read_end, "students": list(self.students) or None}).fetchall()
                in_range.update({(str(i), str(s)): (d, p, o) for i, s, d, p, o in rows})
            outside = [e for e in self._accepted if e not in in_range]
            before: set[tuple[str, str]] = set()
            if outside:
                before = {(str(i), str(s)) for i, s in conn.execute(
                    query("ledger_ids_present"), {"ids": [e for e, _ in outside],
                                                  "students": [s for _, s in outside]})}
            students = set(self._totals) | {sid for _, sid in in_range}
            audits = {sid: StudentAudit(sid) for sid in students}
            for (event_id, sid), (delta, p, o) in self._accepted.items():
                a = audits[sid]
                if (event_id, sid) in before:
                    report.duplicates_before_range += 1
                    continue
                if (event_id, sid) not in in_range and o >= sink_next.get(p, 0):
                    report.in_flight += 1
                    continue
                report.accepted += 1
                a.replayed_xp += delta
                a.replayed_events += 1
                if (event_id, sid) not in in_range:
                    a.only_in_replay.append(event_id)
            for (event_id, sid), (delta, _, _) in in_range.items():
                a = audits[sid]
                a.ledger_range_xp += delta
                a.ledger_range_events += 1
                if (event_id, sid) not in self._accepted or (event_id, sid) in before:
                    a.only_in_ledger.append(event_id)
            for sid, t in self._totals.items():
                audits[sid].games_played = t.games_played
                audits[sid].last_game_type = t.last_game_type
            for sid, lxp, lev, txp, tev in conn.execute(query("student_balances"),
                                                        {"students": list(students)}):
                a = audits[str(sid)]
                a.ledger_xp, a.ledger_events, a.totals_xp, a.totals_events = lxp, lev, txp, tev
        report.students = dict(sorted(audits.items()))


class EventWriter:
    """Writes replayed events as JSON lines or CSV (:data:`EVENT_COLUMNS`) to a binary file."""

    def __init__(self, out: IO[bytes], fmt: str) -> None:
        self.out = out
        self.fmt = fmt
        if fmt == "csv":
            self._text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
            self._csv = csv.writer(self._text)
            self._csv.writerow(EVENT_COLUMNS)

    def write(self, event: XpEvent, partition: int, offset: int, index: int,
              timestamp_ms: int) -> None:
        """Write one accepted event with its source position (``index``: its place in a
        batched record)."""
        row = (partition, offset, index, timestamp_ms, event.id, event.student_id, event.kind,
               event.delta, event.created_at.isoformat(), event.word_set_id, event.homework_id,
               event.metadata)
        if self.fmt == "csv":
            self._csv.writerow(orjson.dumps(v).decode() if isinstance(v, dict) else v
                               for v in row)
        else:
            self.out.write(orjson.dumps(dict(zip(EVENT_COLUMNS, row, strict=True))) + b"\n")

    def close(self) -> None:
        """Flush (the underlying file stays the caller's to close)."""
        if self.fmt == "csv":
            self._text.flush()
            self._text.detach()
        self.out.flush()


def write_totals(report: ReplayReport, path: Path) -> None:
    """Write the per-student figures (:data:`TOTALS_COLUMNS`) as CSV (``.csv``) or JSON lines."""
    rows = [{c: getattr(s, c) for c in TOTALS_COLUMNS} for s in report.students.values()]
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, TOTALS_COLUMNS)
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def render(report: ReplayReport, console: Any, limit: int = 20) -> None:
    """Print the report as tables on a ``rich.console.Console``: the summary, partitions whose
    beginning retention dropped, and up to ``limit`` students with differences."""
    from rich.table import Table

    summary = Table(title=f"replay of {report.topic}: {report.range}")
    summary.add_column("what")
    summary.add_column("records", justify="right")
    rows = [("records read", report.records_read), ("events accepted", report.accepted),
            ("duplicates dropped", report.duplicates), ("conflicts dropped", report.conflicts),
            ("duplicates of events before the range", report.duplicates_before_range),
            ("in flight (past the ledger sink's position)", report.in_flight),
            *((f"invalid: {reason}", n) for reason, n in sorted(report.invalid.items())),
            ("students", len(report.students))]
    for what, n in rows:
        summary.add_row(what, f"{n:,}")
    console.print(summary)
    for r in report.dropped_partitions:
        console.print(f"partition {r.partition}: retention dropped the beginning of the range; "
                      f"the broker keeps offsets from {r.log_start:,}, compared from there on")
    differing = report.differing()
    if not differing:
        coverage = ("whole topic: replayed totals = xp_totals" if report.full_coverage
                    else "range: replayed events = ledger rows")
        console.print(f"no differences ({coverage}; xp_totals = SUM(ledger delta) for "
                      f"{len(report.students):,} students)")
        return
    table = Table(title=f"{len(differing):,} students with differences")
    for col in ("student", "replayed XP", "ledger XP (range)", "ledger XP", "xp_totals XP",
                "what differs"):
        table.add_column(col)
    for sid, diff in list(differing.items())[:limit]:
        s = report.students[sid]
        table.add_row(sid, str(s.replayed_xp), str(s.ledger_range_xp), str(s.ledger_xp),
                      str(s.totals_xp), "; ".join(diff))
    console.print(table)
