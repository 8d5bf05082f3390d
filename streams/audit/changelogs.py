"""``streams audit-changelogs``: the worker's tables as a fresh recovery would restore them,
checked against the ledger (docs/design.md, "Fold worker: checkpoints", guarantee 4).

A worker whose RocksDB is lost (a new pod without its volume, a standby promoted) restores its
tables from their changelogs: the last committed value of each key. What the running worker
holds in RocksDB, and what PostgreSQL's version guard lets through, can hide a stale value in a
changelog (a zombie's write after the new owner folded the key); only such a recovery shows it.
This audit performs that recovery into a scratch store (a dict per table, in memory: no consumer
group, no effect on the running pipeline, read committed) and compares each student's totals
with the fold of the ledger (:func:`streams.audit.rebuild.fold_ledger`): ``total_xp``,
``games_played``, ``last_game_type``, ``version`` (events applied), ``seasonal_xp`` and
``season_id`` must be equal, and every student must be on both sides.

Run it once the pipeline has caught up (lag 0, ledger sink included): a ledger sink behind the
worker shows its missing rows as differences.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka.structs import TopicPartition

from streams import kafka, topics
from streams.audit.rebuild import fold_ledger
from streams.db.connect import connect, mapped_errors
from streams.db.queries import query
from streams.settings import Settings
from streams.xp.fold import Totals, decode_totals

COMPARED = ("total_xp", "games_played", "last_game_type", "version", "seasonal_xp",
            "season_id")
"""The fields of :class:`streams.xp.fold.Totals` the audit compares (the others are positions
and wall-clock times)."""


@dataclass(frozen=True)
class Difference:
    """One key whose recovered value differs from the ledger's fold."""

    table: str
    key: str
    recovered: dict[str, object] | None
    """The compared fields as recovered from the changelog (None: no value)."""
    ledger: dict[str, object] | None
    """The same fields folded from the ledger (None: no ledger rows)."""

    def to_dict(self) -> dict[str, object]:
        """As a JSON-ready dict."""
        return {"table": self.table, "key": self.key, "recovered": self.recovered,
                "ledger": self.ledger}


@dataclass
class ChangelogAudit:
    """The outcome of :func:`audit_changelogs`."""

    records: dict[str, int] = field(default_factory=dict)
    """Changelog topic -> records read (committed, tombstones included)."""
    keys: dict[str, int] = field(default_factory=dict)
    """Table -> keys with a value after recovery."""
    ledger_students: int = 0
    differences: list[Difference] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every recovered value equals the ledger's fold."""
        return not self.differences

    def to_dict(self) -> dict[str, object]:
        """As a JSON-ready dict."""
        return {"ok": self.ok, "records": self.records, "keys": self.keys,
                "ledger_students": self.ledger_students,
                "differences": [d.to_dict() for d in self.differences],
                "seconds": round(self.seconds, 3)}


async def recover_changelog(settings: Settings, topic: str,
                            on_progress: Callable[[int], None] | None = None
                            ) -> tuple[dict[bytes, bytes], int]:
    """Read ``topic`` (a compacted changelog) from its start to its last stable offset with a
    read-committed consumer that joins no group, keeping the last value of each key (a
    tombstone removes it), as Faust's recovery does. Returns (key -> value, records read).

    Raises:
        LookupError: the topic does not exist.
    """
    values: dict[bytes, bytes] = {}
    read = 0
    consumer = kafka.consumer(settings, None)
    await consumer.start()
    await asyncio.sleep(0)  # let its background task start (kafka.OffsetReader says why)
    try:
        tps = [TopicPartition(topic, p) for p in await kafka.partitions_for(consumer, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        left = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while left:
            batch = await consumer.getmany(*left, timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    if record.key is None:
                        continue
                    if record.value is None:
                        values.pop(record.key, None)
                    else:
                        values[record.key] = record.value
                    read += 1
            left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
            if on_progress is not None:
                on_progress(read)
    finally:
        await consumer.stop()
    return values, read


def _fields(totals: Totals) -> dict[str, object]:
    return {name: getattr(totals, name) for name in COMPARED}


def compare_totals(recovered: dict[str, Totals], ledger: dict[str, Totals]) -> list[Difference]:
    """Every student whose recovered totals differ from the ledger's fold in a compared field
    (:data:`COMPARED`), or who is on one side only; in student order. Pure."""
    out: list[Difference] = []
    for student in sorted(recovered.keys() | ledger.keys()):
        got, want = recovered.get(student), ledger.get(student)
        got_f = None if got is None else _fields(got)
        want_f = None if want is None else _fields(want)
        if got_f != want_f:
            out.append(Difference(topics.TOTALS_TABLE, student, got_f, want_f))
    return out


async def audit_changelogs(settings: Settings,
                           on_progress: Callable[[int], None] | None = None) -> ChangelogAudit:
    """Recover the totals table from its changelog and compare it with the ledger's fold.

    Args:
        on_progress: called with the changelog records read so far.

    Raises:
        LookupError: the changelog topic does not exist.
        DatabaseUnavailable: PostgreSQL cannot be reached.
    """
    started = time.monotonic()
    result = ChangelogAudit()
    topic = settings.totals_changelog_topic
    raw, result.records[topic] = await recover_changelog(settings, topic, on_progress)
    recovered = {key.decode(): decode_totals(value) for key, value in raw.items()}
    result.keys[topics.TOTALS_TABLE] = len(recovered)
    ledger: dict[str, Totals] = {}
    url = settings.database_url
    with connect(url) as conn, mapped_errors(url), conn.transaction(), \
            conn.cursor(name="ledger_history") as cur:
        cur.itersize = 20_000
        cur.execute(query("ledger_history"), {"students": None})
        for student, totals, _ in fold_ledger(iter(cur), time.time()):
            ledger[student] = totals
    result.ledger_students = len(ledger)
    result.differences = compare_totals(recovered, ledger)
    result.seconds = time.monotonic() - started
    return result
