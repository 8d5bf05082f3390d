"""Event contracts: decode and validate records against the JSON Schemas in ``schemas/``.

The schema files are the only definition of an event (docs/design.md, "Contracts"); this
module compiles them (:class:`SchemaValidator`) and adds the checks a schema cannot express
(record size, key = student, calendar-valid timestamps). Used alike by the worker, the ledger
sink, replay and reconciliation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import fastjsonschema
import jsonschema_rs
import orjson
from aiokafka.partitioner import murmur2

from streams.errors import InvalidEvent

_PACKAGE = Path(__file__).resolve().parent
SCHEMA_DIR = (_PACKAGE / "schemas" if (_PACKAGE / "schemas").is_dir()
              else _PACKAGE.parent / "schemas")
"""The JSON Schemas: ``streams/schemas`` in an installed wheel (package data), else
``schemas/`` of the source tree (a checkout or an editable install)."""

AWARD_KIND = "daily_login"
"""The kind of the XP event a daily-login award is (docs/design.md, "Grants")."""

AWARD_SOURCE = "grant:daily_login"
"""``metadata.source`` of the grant stream's awards."""

NON_GAME_KINDS = frozenset({AWARD_KIND, "adjustment", "backfill"})
"""Kinds that change total_xp but are not games: they do not count in games_played nor set
last_game_type (games_played counts games played)."""

REASONS = (
    "oversized",
    "bad_json",
    "schema",
    "negative_delta",
    "key_mismatch",
    "bad_timestamp",
    "wrong_partition",
    "metadata_too_large",
    "timestamp_out_of_range",
    "total_overflow",
    "unknown_time_zone",
    "nul_character",
    "claim_in_future",
)
"""Every DLQ reason (DLQ header ``reason``, metrics label); all but ``total_overflow`` (the
fold's, :func:`streams.xp.fold.fold`), ``unknown_time_zone`` (a claim's zone missing from
the pinned tzdata, :mod:`streams.grant.decide`) and ``claim_in_future`` (a claim ahead of the
worker's clock, :mod:`streams.grant.stream`) come from this module."""


@dataclass(frozen=True)
class Limits:
    """Bounds of the input beyond its schema (input hardening), from settings
    (:meth:`streams.settings.Settings.limits`). Every consumer of the XP topic validates with
    the same limits and the record's own timestamp, so worker, ledger sink and replay agree."""

    record_bytes: int = 64 * 1024
    """A record value longer than this is rejected unparsed (``oversized``)."""
    metadata_bytes: int = 4096
    """An event whose ``metadata`` serialises to more bytes is rejected (``metadata_too_large``)."""
    future_seconds: float = 86_400.0
    """``created_at`` later than the record's timestamp by more than this (seconds) is rejected
    (``timestamp_out_of_range``): a client clock far ahead."""
    past_seconds: float = 366 * 86_400.0
    """``created_at`` earlier than the record's timestamp by more than this (seconds) is
    rejected (``timestamp_out_of_range``), except for backfill events and their reversals
    (legacy dates)."""


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
    created_s: float
    """``created_at`` as seconds since the Unix epoch (``datetime.timestamp()``, taken once at
    decode: the fold, the dedupe and the freshness metric each read it)."""
    created_text: str
    """``created_at`` as the event carries it (RFC 3339, the schema's pattern: at most six
    fractional digits, ``Z`` or an offset), the instant :attr:`created_at` holds exactly; the
    ledger sink hands it to PostgreSQL as it is (docs/design.md, "Sinks: batches and rows")."""

    @property
    def is_game(self) -> bool:
        """True when this event counts as a game played (see :data:`NON_GAME_KINDS`)."""
        return self.kind not in NON_GAME_KINDS


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Return the parsed JSON Schema ``schemas/<name>`` (e.g. ``xp_event.v1.json``)."""
    result: dict[str, Any] = orjson.loads((SCHEMA_DIR / name).read_bytes())
    return result


class SchemaValidator:
    """One schema file compiled twice: jsonschema-rs decides, fastjsonschema explains.

    jsonschema-rs (Rust) accepts a valid event in about a fifth of fastjsonschema's time on the
    reference machine. A document it rejects is run through fastjsonschema, which raises
    ``fastjsonschema.JsonSchemaValueException`` with the rule and message that make the DLQ
    reason and detail, so those stay what they always were. fastjsonschema has the last word:
    should the two ever disagree on a rejection, the document is accepted as it would have been
    before (``tests/unit/test_validator.py`` checks that they agree, with hypothesis).

    Args:
        schema: a parsed draft-7 JSON Schema.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        self.fast = jsonschema_rs.validator_for(schema)
        self.explain = fastjsonschema.compile(schema)

    def __call__(self, doc: Any) -> None:
        """Return when ``doc`` is valid; raise ``fastjsonschema.JsonSchemaValueException``."""
        if not self.fast.is_valid(doc):
            self.explain(doc)


@cache
def schema_validator(name: str) -> SchemaValidator:
    """The compiled validator of ``schemas/<name>`` (one per process)."""
    return SchemaValidator(load_schema(name))


def fingerprint(doc: dict[str, Any]) -> bytes:
    """Return an 8-byte digest of ``doc`` with sorted keys (independent of key order)."""
    return hashlib.blake2b(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS), digest_size=8).digest()


MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)
"""The largest UTC offset PostgreSQL's ``timestamptz`` input takes (its error "time zone
displacement out of range" beyond it); RFC 3339 and Python allow up to 23:59, no zone uses more
than 14:00 (docs/design.md, Contracts)."""


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with offset; raise ``ValueError`` when not a real instant or
    when its offset is beyond :data:`MAX_UTC_OFFSET` (the ledger could not store it: the worker
    would fold an event the sink's database refuses). RFC 3339 allows a lower-case ``z`` (and
    ``t``), which ``datetime.fromisoformat`` refuses."""
    value = datetime.fromisoformat(text[:-1] + "Z" if text.endswith("z") else text)
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("timestamp has no UTC offset")
    if abs(offset) > MAX_UTC_OFFSET:
        raise ValueError("UTC offset beyond +-15:59 (PostgreSQL's range)")
    return value


@lru_cache(maxsize=1 << 14)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner (murmur2) gives ``key``.

    aiokafka, the Java client and librdkafka with ``partitioner=murmur2_random`` agree on it.
    Cached for the 16,384 most recent keys (students recur; about 2 MiB): aiokafka's murmur2 is
    pure Python, about 14 us a key on the reference machine, a third of a record's validation.
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def decode_xp(
    key: bytes | None, value: bytes | None, limits: Limits | int,
    position: tuple[int, int] | None = None, timestamp_s: float | None = None,
) -> XpEvent:
    """Decode and validate a record of the XP topic that carries exactly one event.

    Args and errors as :func:`decode_record`; a batched record is rejected (``schema``).
    """
    events = decode_record(key, value, limits, position, timestamp_s)
    if len(events) != 1 or value is None or value.lstrip()[:1] == b"[":
        raise InvalidEvent("schema", "a batch of events where one event was expected")
    return events[0]


def decode_record(
    key: bytes | None, value: bytes | None, limits: Limits | int,
    position: tuple[int, int] | None = None, timestamp_s: float | None = None,
) -> list[XpEvent]:
    """Decode and validate one record of the XP topic: one event or a batch of events.

    A record's value is a JSON object (``xp_event.v1.json``) or a JSON array of them
    (``xp_event_batch.v1.json``: one student's events in order, 1 to 500). A batch is all or
    nothing: one invalid event makes the whole record invalid, the detail naming its index.

    Args:
        key: the record key; must be every event's ``student_id`` (UTF-8).
        value: the record value.
        limits: :class:`Limits` (an int: the record size limit, other limits by default).
        position: ``(partition, partition count)`` the record was read from; when given, the
            record must sit in its key's murmur2 partition, else one student's events would be
            split across partitions and their totals across workers (docs/design.md, guarantee 7).
        timestamp_s: the record's timestamp (seconds since the epoch); when given,
            ``created_at`` must lie within ``limits.past_seconds`` before and
            ``limits.future_seconds`` after it.

    Returns:
        The events in record order, ids lower-cased.

    Raises:
        InvalidEvent: with one of :data:`REASONS`.
    """
    limits, doc = _parse(value, limits)
    if not isinstance(doc, list):
        return [_event(doc, key, position, limits, timestamp_s)]
    try:
        _batch_validator()(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidEvent("schema", f"batch: {exc.message}") from None
    events = []
    for i, item in enumerate(doc):
        try:
            events.append(_event(item, key, position, limits, timestamp_s))
        except InvalidEvent as exc:
            raise InvalidEvent(exc.reason, f"event {i} of the batch: {exc.detail}") from None
    return events


@cache
def _batch_validator() -> SchemaValidator:
    """The batch schema's own rules (array, item count, items are objects); each item is then
    checked against the event schema it refers to (``items.$ref``), by :func:`_event`."""
    schema = dict(load_schema("xp_event_batch.v1.json"))
    if schema["items"] != {"$ref": "xp_event.v1.json"}:
        raise RuntimeError("schemas/xp_event_batch.v1.json: items must refer to xp_event.v1.json")
    schema["items"] = {"type": "object"}
    return SchemaValidator(schema)


def _event(doc: Any, key: bytes | None, position: tuple[int, int] | None, limits: Limits,
           timestamp_s: float | None) -> XpEvent:
    """Validate one parsed event against ``xp_event.v1.json`` and the rules a schema cannot
    express (see :func:`decode_record`)."""
    try:
        schema_validator("xp_event.v1.json")(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        if exc.name == "data.delta" and exc.rule == "minimum" and doc.get("kind") != "adjustment":
            raise InvalidEvent(
                "negative_delta", f"delta {exc.value} < 0 for kind {doc.get('kind')!r}"
            ) from None
        raise InvalidEvent("schema", exc.message) from None
    student_id = doc["student_id"].lower()
    _check_key(key, student_id, "student_id", position)
    created_at, created_s = _instant(doc, "created_at", limits, timestamp_s,
                                     _carries_legacy_date)
    # JSON Schema counts 1.0 as an integer; the ledger's columns are integers: store ints.
    delta = doc["delta"]
    if isinstance(delta, float):
        delta = int(delta)
    metadata = doc.get("metadata")
    if metadata and isinstance(metadata.get("games_played"), float):
        metadata = {**metadata, "games_played": int(metadata["games_played"])}
    _check_metadata(metadata, limits)
    word_set_id = doc.get("word_set_id")
    homework_id = doc.get("homework_id")
    return XpEvent(  # positional: a NamedTuple's keyword construction costs twice as much
        doc["id"].lower(), student_id, doc["kind"], delta, created_at,
        word_set_id.lower() if word_set_id else None,
        homework_id.lower() if homework_id else None,
        metadata, fingerprint(doc), created_s, doc["created_at"],
    )


def _parse(value: bytes | None, limits: Limits | int) -> tuple[Limits, Any]:
    """The limits (an int: the record size) and the parsed JSON of a record ``value``.

    Raises:
        InvalidEvent: ``bad_json`` (no value, not JSON), ``oversized`` or ``nul_character``
            (a string or a key holds U+0000, which PostgreSQL's text and jsonb cannot store:
            the sinks would refuse the row after the worker had folded it).
    """
    if isinstance(limits, int):
        limits = Limits(record_bytes=limits)
    if value is None:
        raise InvalidEvent("bad_json", "record has no value (tombstone)")
    if len(value) > limits.record_bytes:
        raise InvalidEvent("oversized", f"value is {len(value)} bytes, limit {limits.record_bytes}")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("bad_json", str(exc)) from None
    if b"\\u0000" in value and _holds_nul(doc):  # JSON can only carry U+0000 escaped
        raise InvalidEvent("nul_character", "a string holds U+0000 (PostgreSQL cannot store it)")
    return limits, doc


def _holds_nul(doc: Any) -> bool:
    """True when a string or an object key anywhere in ``doc`` contains U+0000."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _carries_legacy_date(doc: dict[str, Any]) -> bool:
    """Exempt from the past bound: a backfill, or the adjustment reversing one
    (``metadata.reverses``, streams backfill --reset), carries the legacy balance's date; an
    award of the grant stream (``metadata.source`` ``grant:daily_login``) carries its claim's
    record time, and is emitted when the claim is decided, which may be long after (a claim
    stamped 400 days ago: its award was dead-lettered, the learner's XP lost while
    ``xp_awards`` held the award)."""
    metadata = doc.get("metadata")
    return doc["kind"] == "backfill" or (
        isinstance(metadata, dict)
        and ((doc["kind"] == "adjustment" and "reverses" in metadata)
             or (doc["kind"] == AWARD_KIND and metadata.get("source") == AWARD_SOURCE)))


def _check_key(key: bytes | None, owner: str, field: str,
               position: tuple[int, int] | None) -> None:
    """The record key must be the event's owner (``student_id``, ``profile_id``), and the record
    must sit in that key's murmur2 partition when ``position`` is given."""
    if key is None or key.decode("utf-8", "replace").lower() != owner:
        raise InvalidEvent("key_mismatch", f"record key {key!r} is not {field} {owner}")
    if position is not None and partition_for(key, position[1]) != position[0]:
        raise InvalidEvent(
            "wrong_partition",
            f"key {owner} belongs in partition {partition_for(key, position[1])} of "
            f"{position[1]}, read from {position[0]}: publish with the murmur2 partitioner",
        )


def _instant(doc: dict[str, Any], field: str, limits: Limits, timestamp_s: float | None,
             past_exempt: Callable[[dict[str, Any]], bool] | None = None,
             ) -> tuple[datetime, float]:
    """Parse ``doc[field]`` (RFC 3339) and check it against the record's timestamp; return it
    and its seconds since the epoch. ``past_exempt(doc)`` (asked only for an instant past the
    bound) exempts it from the past bound."""
    try:
        value = parse_timestamp(doc[field])
    except ValueError as exc:
        raise InvalidEvent("bad_timestamp", f"{field} {doc[field]!r}: {exc}") from None
    seconds = value.timestamp()
    if timestamp_s is not None and timestamp_s > 0:  # -1: the record has no timestamp
        ahead = seconds - timestamp_s
        if ahead > limits.future_seconds or (
                -ahead > limits.past_seconds
                and not (past_exempt is not None and past_exempt(doc))):
            raise InvalidEvent(
                "timestamp_out_of_range",
                f"{field} {doc[field]} is {ahead:+.0f} s from the record's timestamp "
                f"(allowed -{limits.past_seconds:.0f}..+{limits.future_seconds:.0f})")
    return value, seconds


def _check_metadata(metadata: dict[str, Any] | None, limits: Limits) -> None:
    """``metadata_too_large``: ``metadata`` serialises to more than ``limits.metadata_bytes``,
    or nests deeper than orjson serialises inside its event (253 levels; a 1 KB record can:
    the fingerprint, the size check and the ledger's jsonb would each raise ``TypeError``, a
    worker exit on the same record after every restart)."""
    if metadata:
        try:  # inside a list, as inside its event: the fingerprint serialises the event
            size = len(orjson.dumps([metadata])) - 2
        except TypeError as exc:  # orjson's recursion limit
            raise InvalidEvent("metadata_too_large", f"metadata: {exc}") from None
        if size > limits.metadata_bytes:
            raise InvalidEvent("metadata_too_large",
                               f"metadata is {size} bytes, limit {limits.metadata_bytes}")


class ActionEvent(NamedTuple):
    """One valid learner action (schema ``action_event.v1.json``)."""

    id: str
    """Event UUID, lower case: the idempotency key."""
    action_id: str
    profile_id: str
    """Learner profile UUID, lower case; equals the record key."""
    source: str
    vector: str
    qol_domain: str | None
    selected_at: datetime
    completed_at: datetime | None
    duration: int | None
    """Seconds, rounded to whole seconds (the ledger column is an integer)."""
    mode: str | None
    metadata: dict[str, Any] | None
    fingerprint: bytes

    @property
    def sequence_version(self) -> str:
        """The vector sequence version the action belongs to: ``metadata.sequence_version``
        when it is a string, else ``v1`` (the migration plan's default)."""
        version = (self.metadata or {}).get("sequence_version")
        return version if isinstance(version, str) and version else "v1"


def decode_action(
    key: bytes | None, value: bytes | None, limits: Limits | int,
    position: tuple[int, int] | None = None, timestamp_s: float | None = None,
) -> ActionEvent:
    """Decode and validate one record of the action topic (``action_event.v1.json``).

    Args and errors as :func:`decode_record` (the key must be the ``profile_id``;
    ``selected_at`` and ``completed_at`` are checked against the record's timestamp).
    """
    limits, doc = _parse(value, limits)
    try:
        schema_validator("action_event.v1.json")(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidEvent("schema", exc.message) from None
    profile_id = doc["profile_id"].lower()
    _check_key(key, profile_id, "profile_id", position)
    selected_at = _instant(doc, "selected_at", limits, timestamp_s)[0]
    completed_at = (_instant(doc, "completed_at", limits, timestamp_s)[0]
                    if doc.get("completed_at") else None)
    metadata = doc.get("metadata")
    _check_metadata(metadata, limits)
    duration = doc.get("duration")
    return ActionEvent(
        id=doc["id"].lower(), action_id=doc["action_id"], profile_id=profile_id,
        source=doc["source"], vector=doc["vector"], qol_domain=doc.get("qol_domain"),
        selected_at=selected_at, completed_at=completed_at,
        duration=None if duration is None else round(duration), mode=doc.get("mode"),
        metadata=metadata, fingerprint=fingerprint(doc),
    )


def decode_document(schema: str, key_field: str, key: bytes | None, value: bytes | None,
                    limits: Limits | int,
                    position: tuple[int, int] | None = None) -> dict[str, Any]:
    """Decode and validate a record whose value follows ``schemas/<schema>`` and whose key is
    the value's ``key_field``: size, JSON, schema, key, partition (as :func:`decode_record`).

    Returns:
        The parsed JSON object.

    Raises:
        InvalidEvent: ``oversized``, ``bad_json``, ``schema``, ``key_mismatch`` or
            ``wrong_partition``.
    """
    _, doc = _parse(value, limits)
    try:
        schema_validator(schema)(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidEvent("schema", exc.message) from None
    _check_key(key, doc[key_field].lower(), key_field, position)
    result: dict[str, Any] = doc
    return result
