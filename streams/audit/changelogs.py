"""``streams audit-changelogs``: the worker's tables as a fresh recovery would restore them,
checked against the ledgers (docs/design.md, "Fold worker: checkpoints", guarantee 4).

A worker whose RocksDB is lost (a new pod without its volume, a standby promoted) restores its
tables from their changelogs: the last committed value of each key. What the running worker
holds in RocksDB, and what PostgreSQL's version guard lets through, can hide a stale value in a
changelog (a zombie's write after the new owner folded the key); only such a recovery shows it.
This audit performs that recovery into a scratch store (a dict per table, in memory: no consumer
group, no effect on the running pipeline, read committed) and checks every table of the worker
against what it must equal:

- ``xp_totals``: each student's totals equal the fold of their ledger rows
  (:func:`streams.audit.rebuild.fold_ledger`) in ``total_xp``, ``games_played``,
  ``last_game_type``, ``version`` (events applied), ``seasonal_xp`` and ``season_id``;
- ``xp_dedupe`` and ``action_dedupe``: each sighting is the ledger row of its event (same
  partition, offset, place in its record, content fingerprint and ``created_at``, or
  ``selected_at`` for actions), and every ledger row has its sighting, unless the dedupe horizon
  may have expired it (XP rows whose ``created_at`` is older than the horizon; action sightings
  are kept for ever);
- ``vector_progress``: each row equals the fold of its action events
  (:func:`streams.actions.fold.fold`, in partition order) in step, draft skip, events applied
  and last position;
- ``xp_grant_state``: each student's state equals the state a replay of the whole claims topic
  reaches (:func:`streams.audit.grants.replay_claims`): the claims topic is the grant's ledger;
- ``claim_dedupe``: each claim sighting is the first record of its claim id in that replay, and
  every claim younger than the dedupe horizon has its sighting;
- ``xp_positions``: each source partition's position equals the worker group's committed offset
  (both are written by one transaction).

Run it once the pipeline has caught up (lag 0, the ledger sinks included): a ledger sink behind
the worker shows its missing rows as differences.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import orjson

from streams import kafka, topics
from streams.actions.fold import Progress, decode_progress, fold, progress_key
from streams.audit.grants import replay_claims
from streams.audit.rebuild import fold_ledger
from streams.db.connect import connect, mapped_errors
from streams.db.queries import query
from streams.dedupe import decode_sighting
from streams.events import ActionEvent
from streams.grant.decide import GrantState
from streams.settings import Settings
from streams.xp.fold import Totals, decode_totals

K = TypeVar("K")

COMPARED = ("total_xp", "games_played", "last_game_type", "version", "seasonal_xp",
            "season_id")
"""The fields of :class:`streams.xp.fold.Totals` the audit compares (the others are positions
and wall-clock times)."""

PROGRESS_COMPARED = ("step_index", "draft_skipped_at", "applied", "partition", "offset")
"""The fields of :class:`streams.actions.fold.Progress` the audit compares (the others are the
key and wall-clock times)."""


@dataclass(frozen=True)
class Difference:
    """One key whose recovered value differs from what the ledger says it must be."""

    table: str
    key: str
    recovered: dict[str, object] | None
    """The compared fields as recovered from the changelog (None: no value)."""
    ledger: dict[str, object] | None
    """The same fields from the ledger (None: no ledger rows)."""

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
    """Students with XP ledger rows."""
    ledger_rows: dict[str, int] = field(default_factory=dict)
    """Source -> rows or records compared (``xp_events``, ``action_events``, the claims
    topic)."""
    differences: list[Difference] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every recovered value equals the ledger's."""
        return not self.differences

    def differing(self) -> dict[str, int]:
        """Table -> differing keys (tables with none left out)."""
        out: dict[str, int] = {}
        for d in self.differences:
            out[d.table] = out.get(d.table, 0) + 1
        return out

    def to_dict(self) -> dict[str, object]:
        """As a JSON-ready dict."""
        return {"ok": self.ok, "records": self.records, "keys": self.keys,
                "ledger_students": self.ledger_students, "ledger_rows": self.ledger_rows,
                "differing": self.differing(),
                "differences": [d.to_dict() for d in self.differences],
                "seconds": round(self.seconds, 3)}


async def recover_changelog(settings: Settings, topic: str,
                            on_progress: Callable[[int], None] | None = None
                            ) -> tuple[dict[tuple[int, bytes], bytes], int]:
    """Read ``topic`` (a compacted changelog) from its start to its last stable offset with a
    read-committed reader that joins no group, keeping the last value of each key in each
    partition (a tombstone removes it), as Faust's recovery does. Returns ((partition, key) ->
    value, records read).

    Raises:
        LookupError: the topic does not exist.
    """
    values: dict[tuple[int, bytes], bytes] = {}
    read = 0
    progress = None if on_progress is None else (lambda n, _total: on_progress(n))
    async for record in kafka.read_to_end(settings, topic, progress):
        read += 1
        if record.key is None:
            continue
        if record.value is None:
            values.pop((record.partition, record.key), None)
        else:
            values[(record.partition, record.key)] = record.value
    return values, read


def compare_fields(table: str, recovered: dict[K, dict[str, object]],
                   expected: dict[K, dict[str, object]]) -> list[Difference]:
    """Every key whose recovered fields differ from the expected ones, or that is on one side
    only; in key order. Pure."""
    out: list[Difference] = []
    for key in sorted(recovered.keys() | expected.keys(), key=str):
        got, want = recovered.get(key), expected.get(key)
        if got != want:
            out.append(Difference(table, str(key), got, want))
    return out


def compare_totals(recovered: dict[str, Totals], ledger: dict[str, Totals]) -> list[Difference]:
    """Every student whose recovered totals differ from the ledger's fold in a compared field
    (:data:`COMPARED`), or who is on one side only; in student order. Pure."""
    def fields(t: Totals) -> dict[str, object]:
        return {name: getattr(t, name) for name in COMPARED}
    return compare_fields(topics.TOTALS_TABLE, {k: fields(v) for k, v in recovered.items()},
                          {k: fields(v) for k, v in ledger.items()})


class LedgerSighting(NamedTuple):
    """A ledger row as the sighting of its event: ``(id, owner, partition, offset,
    record_index, fingerprint, created_at)`` (the queries ``ledger_sightings`` and
    ``action_sightings``, or a claim's first record in a replay of the claims topic, whose
    sightings are keyed by the claim id alone: owner None)."""

    id: uuid.UUID
    owner: uuid.UUID | None
    partition: int
    offset: int
    record_index: int
    fingerprint: bytes
    created_at: float
    """Seconds since the epoch."""

    @classmethod
    def of_row(cls, row: tuple[Any, ...]) -> LedgerSighting:
        """From a row of ``ledger_sightings`` / ``action_sightings`` (a datetime last)."""
        eid, owner, partition, offset, index, fp, created = row
        return cls(eid, owner, partition, offset, index, bytes(fp), created.timestamp())

    @property
    def key(self) -> bytes:
        """The table key: :func:`streams.dedupe.event_key`, or the claim id's 16 bytes."""
        return self.id.bytes if self.owner is None else self.id.bytes + self.owner.bytes


def _sighting_fields(partition: int, offset: int, index: int, fingerprint: bytes,
                     created_at: float) -> dict[str, object]:
    return {"partition": partition, "offset": offset, "record_index": index,
            "fingerprint": fingerprint.hex(), "created_at": created_at}


def compare_sightings(table: str, recovered: dict[tuple[int, bytes], bytes],
                      ledger: Iterable[LedgerSighting],
                      may_be_expired: Callable[[float], bool]) -> list[Difference]:
    """Check a dedupe table against its ledger: each sighting must be its event's ledger row
    (same partition, offset, place, fingerprint and ``created_at``), and each ledger row must
    have its sighting in its partition unless ``may_be_expired(created_at)`` (seconds since
    the epoch). A sighting under the id alone (a store written before events were keyed by
    owner, :func:`streams.worker.state.find_sighting`) matches a row it equals.

    Args:
        recovered: (partition, :attr:`LedgerSighting.key`) -> encoded
            :class:`streams.dedupe.Sighting` (decoded one at a time: the table can be the
            largest in memory); consumed, entries are removed as they are matched.
    """
    out: list[Difference] = []
    for row in ledger:
        created = row.created_at
        want = _sighting_fields(row.partition, row.offset, row.record_index,
                                bytes(row.fingerprint), created)
        key = _shown(row.key, row.partition)
        raw = recovered.pop((row.partition, row.key), None)
        legacy = None if row.owner is None else recovered.get((row.partition, row.id.bytes))
        if legacy is not None and _fields(legacy) == want:
            del recovered[(row.partition, row.id.bytes)]
            raw = raw or legacy
        if raw is None:
            if not may_be_expired(created):
                out.append(Difference(table, key, None, want))
            continue
        got = _fields(raw)
        if got != want:
            out.append(Difference(table, key, got, want))
    for (partition, raw_key), raw in sorted(recovered.items()):
        out.append(Difference(table, _shown(raw_key, partition), _fields(raw), None))
    return out


def _fields(raw: bytes) -> dict[str, object]:
    """The compared fields of an encoded sighting."""
    seen = decode_sighting(raw)
    return _sighting_fields(seen.partition, seen.offset, seen.record_index, seen.fingerprint,
                            seen.created_at)


def _shown(key: bytes, partition: int) -> str:
    """A sightings key as a report shows it: ``id[/owner]@partition``."""
    ids = [str(uuid.UUID(bytes=key[i:i + 16])) for i in range(0, len(key), 16)]
    return f"{'/'.join(ids)}@{partition}"


def fold_actions(rows: Iterator[tuple[Any, ...]]) -> dict[bytes, Progress]:
    """Fold action ledger rows (the query ``action_history``: in partition order) as the worker
    does; progress key -> progress."""
    out: dict[bytes, Progress] = {}
    for (eid, action_id, profile_id, source, vector, qol_domain, selected_at, completed_at,
         duration, mode, metadata, fingerprint, partition, offset) in rows:
        event = ActionEvent(str(eid), action_id, str(profile_id), source, vector, qol_domain,
                            selected_at, completed_at, duration, mode, metadata,
                            bytes(fingerprint))
        key = progress_key(event)
        out[key] = fold(out.get(key), event, partition, offset, 0.0)
    return out


def compare_progress(recovered: dict[bytes, Progress],
                     ledger: dict[bytes, Progress]) -> list[Difference]:
    """Every progress row whose compared fields (:data:`PROGRESS_COMPARED`) differ from the
    fold of its action events, or that is on one side only. Pure."""
    def fields(p: Progress) -> dict[str, object]:
        return {name: getattr(p, name) for name in PROGRESS_COMPARED}
    return compare_fields(topics.PROGRESS_TABLE,
                          {k.decode(): fields(v) for k, v in recovered.items()},
                          {k.decode(): fields(v) for k, v in ledger.items()})


def compare_grant_states(recovered: dict[str, GrantState],
                         replayed: dict[str, GrantState]) -> list[Difference]:
    """Every student whose recovered grant state differs in any field from the state a replay
    of the claims topic reaches, or who is on one side only. Pure."""
    def fields(s: GrantState) -> dict[str, object]:
        loaded: dict[str, object] = orjson.loads(s.to_json())
        return loaded
    return compare_fields(topics.GRANT_TABLE, {k: fields(v) for k, v in recovered.items()},
                          {k: fields(v) for k, v in replayed.items()})


def compare_positions(recovered: dict[str, int],
                      committed: dict[str, int | None]) -> list[Difference]:
    """Every source partition (``topic/partition``) whose recovered position differs from the
    worker group's committed offset. Pure."""
    return compare_fields(
        topics.POSITIONS_TABLE, {k: {"offset": v} for k, v in recovered.items()},
        {k: {"offset": v} for k, v in committed.items() if v is not None})


async def audit_changelogs(settings: Settings,
                           on_progress: Callable[[int], None] | None = None) -> ChangelogAudit:
    """Recover every table of the worker from its changelog and check it (module docstring).

    Args:
        on_progress: called with the changelog records read so far (all tables).

    Raises:
        LookupError: a changelog topic does not exist.
        DatabaseUnavailable: PostgreSQL cannot be reached.
        KafkaError: the brokers cannot be reached.
    """
    started = time.monotonic()
    s = settings
    result = ChangelogAudit()
    raw: dict[str, dict[tuple[int, bytes], bytes]] = {}
    done = 0
    for table in topics.WORKER_TABLES:
        topic = topics.changelog_topic(s.worker_group, table)
        step = None if on_progress is None else (lambda n, base=done: on_progress(base + n))
        raw[table], result.records[topic] = await recover_changelog(s, topic, step)
        done += result.records[topic]
        result.keys[table] = len(raw[table])
    totals = {k.decode(): decode_totals(v) for (_, k), v in raw.pop(topics.TOTALS_TABLE).items()}
    progress = {k: decode_progress(v) for (_, k), v in raw.pop(topics.PROGRESS_TABLE).items()}
    grants = {k.decode(): GrantState.from_json(v)
              for (_, k), v in raw.pop(topics.GRANT_TABLE).items()}
    positions = {k.decode(): topics.decode_position(v)
                 for (_, k), v in raw.pop(topics.POSITIONS_TABLE).items()}
    xp_seen, action_seen = raw.pop(topics.DEDUPE_TABLE), raw.pop(topics.ACTION_DEDUPE_TABLE)
    claim_seen = raw.pop(topics.CLAIM_DEDUPE_TABLE)

    replay = await replay_claims(s)
    result.ledger_rows[s.claims_topic] = replay.records
    committed: dict[str, int | None] = {}
    async with kafka.OffsetReader(s) as reader:
        for topic in (s.xp_topic, s.action_topic, s.claims_topic):
            for p, offset in (await reader.committed(s.worker_group, topic)).items():
                committed[topics.position_key(topic, p).decode()] = offset

    horizon_start = time.time() - s.dedupe_horizon_seconds
    differences: list[Difference] = []
    url = s.database_url
    with connect(url) as conn, mapped_errors(url), conn.transaction():
        ledger: dict[str, Totals] = {}
        with conn.cursor(name="ledger_history") as cur:
            cur.itersize = 20_000
            cur.execute(query("ledger_history"), {"students": None})
            for student, folded, rows in fold_ledger(iter(cur), time.time()):
                ledger[student] = folded
                result.ledger_rows["xp_events"] = result.ledger_rows.get("xp_events", 0) + rows
        result.ledger_students = len(ledger)
        differences += compare_totals(totals, ledger)
        with conn.cursor(name="ledger_sightings") as cur:
            cur.itersize = 20_000
            cur.execute(query("ledger_sightings"))
            differences += compare_sightings(
                topics.DEDUPE_TABLE, xp_seen, (LedgerSighting.of_row(row) for row in cur),
                lambda created: created < horizon_start)
        with conn.cursor(name="action_sightings") as cur:
            cur.itersize = 20_000
            cur.execute(query("action_sightings"))
            differences += compare_sightings(
                topics.ACTION_DEDUPE_TABLE, action_seen,
                (LedgerSighting.of_row(row) for row in cur),
                lambda _created: False)
        with conn.cursor(name="action_history") as cur:
            cur.itersize = 20_000
            cur.execute(query("action_history"))
            folded_actions = fold_actions(iter(cur))
            result.ledger_rows["action_events"] = sum(p.applied for p in folded_actions.values())
        differences += compare_progress(progress, folded_actions)
    differences += compare_grant_states(grants, replay.states)
    differences += compare_sightings(
        topics.CLAIM_DEDUPE_TABLE, claim_seen,
        (LedgerSighting(uuid.UUID(bytes=claim_id), None, p, seen.offset, 0, seen.fingerprint,
                        seen.created_at)
         for (p, claim_id), seen in sorted(replay.sightings.items())),
        lambda created: created < horizon_start)
    differences += compare_positions(positions, committed)
    result.differences = differences
    result.seconds = time.monotonic() - started
    return result
