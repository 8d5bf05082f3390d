"""The dedupe rule: decide what an event already seen means. Pure functions, no I/O.

A sighting is kept per event (id and owner, :func:`event_key`) for the dedupe horizon
(docs/design.md, guarantee 8). For a record:
- no sighting -> ``NEW``;
- a sighting at the same position (partition, offset, index in a batched record) ->
  ``REDELIVERY`` (the same record again, after
  a crash before the offset commit: fold it unless the totals already have it);
- a sighting elsewhere with the same content -> ``DUPLICATE``, dropped;
- a sighting elsewhere with other content -> ``CONFLICT``: the first one wins, counted and
  reported (docs/design.md, Contracts).
Past the horizon the sighting is gone; the worker then checks the ledger (:func:`from_ledger`).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import orjson


def event_key(event_id: str, owner: str) -> bytes:
    """The dedupe key of an event: its id's 16 bytes, then its owner's (the student or profile
    the record is keyed by), 32 bytes. An event's identity is (id, owner): one id sent for two
    students is two events (docs/design.md, Contracts).

    Args:
        event_id, owner: canonical lowercase UUIDs (as :mod:`streams.events` decodes them).

    Raises:
        ValueError: either is not a UUID in its canonical text form.
    """
    return bytes.fromhex(event_id.replace("-", "") + owner.replace("-", ""))


LEGACY_KEY_BYTES = 16
"""Length of the keys stores written before events were keyed by owner hold: the id alone.
Looked up when an event's own key has no sighting (:func:`streams.worker.state.find_sighting`)."""


class Verdict(enum.Enum):
    """What a record is, relative to earlier records with the same event id."""

    NEW = "new"
    REDELIVERY = "redelivery"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


class Sighting(NamedTuple):
    """The first accepted record with a given event id."""

    fingerprint: bytes
    """Content digest (:func:`streams.events.fingerprint`)."""
    partition: int
    """Partition it was read from."""
    offset: int
    """Offset it was read at."""
    seen_at: float
    """Wall-clock time the worker first saw it (seconds since the epoch)."""
    created_at: float
    """The event's created_at (seconds since the epoch)."""
    record_index: int = 0
    """Its place in its record (batched records; 0 for a record of one event)."""


def classify(seen: Sighting | None, fp: bytes, partition: int, offset: int,
             index: int = 0) -> Verdict:
    """Classify an event with content digest ``fp`` read at ``partition``/``offset``, at
    ``index`` in its record."""
    if seen is None:
        return Verdict.NEW
    if (seen.partition, seen.offset, seen.record_index) == (partition, offset, index):
        return Verdict.REDELIVERY
    return Verdict.DUPLICATE if seen.fingerprint == fp else Verdict.CONFLICT


def classify_within(seen: Sighting | None, fp: bytes, partition: int, offset: int,
                    created_at: float, horizon: float) -> Verdict:
    """:func:`classify` by record time: a sighting whose ``created_at`` is more than
    ``horizon`` seconds before ``created_at`` (the new record's time) counts as gone (``NEW``),
    so a replay that keeps every sighting decides as the worker, whose expiry removed it.
    The claims' rule (docs/design.md, "Grants")."""
    if seen is not None and created_at - seen.created_at > horizon:
        return Verdict.NEW
    return classify(seen, fp, partition, offset)


def from_ledger(
    ledger_position: tuple[int, int, int, bytes] | None, fp: bytes, partition: int, offset: int,
    index: int = 0,
) -> Verdict:
    """Classify an event whose id fell out of the dedupe horizon, from the ledger's row.

    Args:
        ledger_position: ``(partition, offset, record_index, fingerprint)`` of the ledger row
            with that id, or None when the ledger has none.
    """
    if ledger_position is None:
        return Verdict.NEW
    lp, lo, li, lfp = ledger_position
    if (lp, lo, li) == (partition, offset, index):
        return Verdict.NEW  # the ledger sink ran ahead and stored this very record
    return Verdict.DUPLICATE if lfp == fp else Verdict.CONFLICT


def expired(seen: Sighting, now: float, horizon: float) -> bool:
    """True when both the sighting and the event's created_at are older than ``horizon`` s.

    Keeping entries until their created_at is old too means a late duplicate always carries an
    old created_at, which is what sends it to the ledger check.
    """
    return seen.seen_at < now - horizon and seen.created_at < now - horizon


def expired_encoded(raw: bytes, now: float, horizon: float) -> bool:
    """:func:`expired` of an encoded sighting, reading only its two times: the expiry scan
    reads every stored sighting, and a full decode costs about nine times as much.

    Raises:
        ValueError, IndexError: ``raw`` is not an encoded sighting.
    """
    fields = orjson.loads(raw)
    cutoff = now - horizon
    return bool(fields[3] < cutoff and fields[4] < cutoff)


def encode_sighting(s: Sighting) -> bytes:
    """Serialise a sighting compactly for the table changelog."""
    return orjson.dumps((s.fingerprint.hex(), s.partition, s.offset, s.seen_at, s.created_at,
                         s.record_index))


def decode_sighting(raw: bytes) -> Sighting:
    """Inverse of :func:`encode_sighting` (entries written before ``record_index`` existed have
    one field less: 0)."""
    fp, *rest = orjson.loads(raw)
    return Sighting(bytes.fromhex(fp), *rest)
