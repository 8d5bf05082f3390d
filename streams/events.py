"""Event contracts: decode and validate records against the JSON Schemas in ``schemas/``.

The schema files are the only definition of an event (DESIGN.md section 3); this module
compiles them with fastjsonschema and adds the checks a schema cannot express (record size,
key = student, calendar-valid timestamps). Used alike by the worker, the ledger sink, replay
and reconciliation.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import fastjsonschema
import orjson
from aiokafka.partitioner import murmur2

from streams.errors import InvalidEvent

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
"""Where the schema files live (repository checkout or editable install)."""

NON_GAME_KINDS = frozenset({"daily_login", "adjustment", "backfill"})
"""Kinds that change total_xp but are not games: they do not count in games_played nor set
last_game_type (seed 001: games_played counts games played)."""

REASONS = (
    "oversized",
    "bad_json",
    "schema",
    "negative_delta",
    "key_mismatch",
    "bad_timestamp",
    "wrong_partition",
)
"""Every DLQ reason this module can give (DLQ header ``reason``, metrics label)."""


class XpEvent(NamedTuple):
    """One valid XP event (schema ``xp_event.v1.json``)."""

    id: str
    """Event UUID, lower case: the idempotency key."""
    student_id: str
    """Student UUID, lower case; equals the record key."""
    kind: str
    """Game or award kind token."""
    delta: int
    """XP change (may be negative only for ``adjustment``)."""
    created_at: datetime
    """Client creation time, timezone-aware."""
    word_set_id: str | None
    """Optional word set UUID."""
    homework_id: str | None
    """Optional homework UUID."""
    metadata: dict[str, Any] | None
    """Optional free-form object."""
    fingerprint: bytes
    """8-byte digest of the event's content: tells a duplicate (same id, same content) from
    a conflict (same id, other content)."""

    @property
    def is_game(self) -> bool:
        """True when this event counts as a game played (see :data:`NON_GAME_KINDS`)."""
        return self.kind not in NON_GAME_KINDS


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Return the parsed JSON Schema ``schemas/<name>`` (e.g. ``xp_event.v1.json``)."""
    result: dict[str, Any] = orjson.loads((SCHEMA_DIR / name).read_bytes())
    return result


@cache
def _validator(name: str) -> Any:
    return fastjsonschema.compile(load_schema(name))


def fingerprint(doc: dict[str, Any]) -> bytes:
    """Return an 8-byte digest of ``doc`` with sorted keys (independent of key order)."""
    return hashlib.blake2b(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS), digest_size=8).digest()


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with offset; raise ``ValueError`` when not a real instant."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("timestamp has no UTC offset")
    return value


@lru_cache(maxsize=1 << 17)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner (murmur2) gives ``key``.

    aiokafka, the Java client and librdkafka with ``partitioner=murmur2_random`` agree on it.
    Cached (keys are students, who recur): aiokafka's murmur2 is pure Python, about 14 us a
    key on the reference machine, a third of a record's whole validation.
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def decode_xp(
    key: bytes | None, value: bytes | None, max_bytes: int,
    position: tuple[int, int] | None = None,
) -> XpEvent:
    """Decode and validate one record of the XP topic.

    Args:
        key: the record key; must be the event's ``student_id`` (UTF-8).
        value: the record value, a JSON object per ``xp_event.v1.json``.
        max_bytes: values longer than this are rejected unparsed.
        position: ``(partition, partition count)`` the record was read from; when given, the
            record must sit in its key's murmur2 partition, else one student's events would be
            split across partitions and their totals across workers (DESIGN.md guarantee 7).

    Returns:
        The event, ids lower-cased.

    Raises:
        InvalidEvent: with one of :data:`REASONS`.
    """
    if value is None:
        raise InvalidEvent("bad_json", "record has no value (tombstone)")
    if len(value) > max_bytes:
        raise InvalidEvent("oversized", f"value is {len(value)} bytes, limit {max_bytes}")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("bad_json", str(exc)) from None
    try:
        _validator("xp_event.v1.json")(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        if exc.name == "data.delta" and exc.rule == "minimum" and doc.get("kind") != "adjustment":
            raise InvalidEvent(
                "negative_delta", f"delta {exc.value} < 0 for kind {doc.get('kind')!r}"
            ) from None
        raise InvalidEvent("schema", exc.message) from None
    student_id = doc["student_id"].lower()
    if key is None or key.decode("utf-8", "replace").lower() != student_id:
        raise InvalidEvent("key_mismatch", f"record key {key!r} is not student_id {student_id}")
    if position is not None and partition_for(key, position[1]) != position[0]:
        raise InvalidEvent(
            "wrong_partition",
            f"key {student_id} belongs in partition {partition_for(key, position[1])} of "
            f"{position[1]}, read from {position[0]}: publish with the murmur2 partitioner",
        )
    try:
        created_at = parse_timestamp(doc["created_at"])
    except ValueError as exc:
        raise InvalidEvent("bad_timestamp", f"created_at {doc['created_at']!r}: {exc}") from None
    word_set_id = doc.get("word_set_id")
    homework_id = doc.get("homework_id")
    return XpEvent(
        id=doc["id"].lower(),
        student_id=student_id,
        kind=doc["kind"],
        delta=doc["delta"],
        created_at=created_at,
        word_set_id=word_set_id.lower() if word_set_id else None,
        homework_id=homework_id.lower() if homework_id else None,
        metadata=doc.get("metadata"),
        fingerprint=fingerprint(doc),
    )


def encode_xp(event: dict[str, Any]) -> bytes:
    """Serialise an event dict to the wire form (orjson); the inverse of :func:`decode_xp`."""
    return orjson.dumps(event)
