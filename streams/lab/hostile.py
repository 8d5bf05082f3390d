"""``streams lab hostile``: a campaign of hostile input through every stream (docs/design.md,
"Input hardening").

Seeded generators (:func:`generate`) write records for each input topic (XP, actions,
claims, policies), drawn from named cases: well-formed events with duplicates, conflicts and
ids reused across students, and every kind of hostile record a careless or broken client
sends: random bytes, invalid UTF-8, JSON nested to 5,000 levels, numbers at and past 2^63 and
1e308, dates at 0001-01-01 and 9999-12-31, time-zone edges (``Factory``, ``EST5EDT``, names of
300 characters), keys that do not match the payload, empty and missing keys, junk and forged
headers, tombstones, values at the pipeline's and at the broker's size limit, record times far
in the past and ahead.

:class:`Campaign` publishes them to the real pipeline (every stage of the topology as its own
process), waits until every consumer group has lag 0 and checks that each record the broker
accepted was decided or dead-lettered with the reason the pipeline's own validation gives it
offline (:func:`expect`): the DLQ of each source topic by reason, the ledgers' rows, 0
processes exited, 0 stalls (a group not at lag 0 within the deadline), totals = SUM(ledger)
for every student, nothing refused by PostgreSQL (the sink DLQ is empty), the policies
topic's records applied or refused as expected, and the changelog audit clean. Records the
broker refuses (a timestamp more than an hour ahead on Apache Kafka 4.x, a value over its
message size) are counted apart: they never reached the pipeline. Everything lives in its own
schema and topics (:class:`streams.dev.scratch.Scratch`).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import orjson
from aiokafka.errors import KafkaError

from streams import kafka, topology
from streams.audit.changelogs import audit_changelogs
from streams.audit.dlq import count_dlq, dlq_sources
from streams.audit.reconcile import mismatched_students
from streams.db.connect import connect, mapped_errors
from streams.dev.procs import free_port
from streams.dev.scratch import Scratch
from streams.dev.stack import PipelineProcess
from streams.errors import InvalidEvent
from streams.events import Limits, decode_action, decode_record, partition_for
from streams.grant.decide import IN_FUTURE, decode_claim
from streams.lab.loadgen import CLAIM_POLICY, CLAIM_POLICY_PUBLISHED_MS
from streams.lab.queries import lab_query
from streams.policies import Policies
from streams.policy_feed import apply, judge
from streams.settings import Settings

TOPICS = ("xp", "actions", "claims", "policies")
"""The input topics a campaign writes, by short name."""

SHARES = {"xp": 0.62, "actions": 0.2, "claims": 0.18}
"""Share of a campaign's records per topic (policies: a fixed list, :func:`_policies`)."""

BROKER_MESSAGE_BYTES = 1_048_588
"""Apache Kafka's default ``message.max.bytes``: the near-limit cases are sized against it."""

FUTURE_CLAIM_S = (2400, 3300)
"""A claim ``claim_in_future`` is stamped this many seconds ahead (inside Apache Kafka 4.x's
one-hour ``log.message.timestamp.after.max.ms``, well past the worker's claim skew)."""


@dataclass
class HostileRecord:
    """One record of a campaign."""

    topic: str
    """Short topic name (:data:`TOPICS`)."""
    case: str
    """The generator case that made it (the report's rows)."""
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    partition: int
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    risky: bool = False
    """The broker may refuse it (sent one at a time, apart from the rest)."""


@dataclass
class _Gen:
    """The state the generators share: seeded randomness, the clock, earlier valid records."""

    rng: random.Random
    now_ms: int
    partitions: int
    limits: Limits
    students: list[str]
    xp_sent: list[dict[str, Any]] = field(default_factory=list)
    actions_sent: list[dict[str, Any]] = field(default_factory=list)
    claims_sent: list[dict[str, Any]] = field(default_factory=list)

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def student(self) -> str:
        return self.rng.choice(self.students)

    def record(self, topic: str, case: str, key: bytes | None, value: bytes | None,
               timestamp_ms: int | None = None, partition: int | None = None,
               headers: list[tuple[str, bytes]] | None = None, risky: bool = False
               ) -> HostileRecord:
        if partition is None:
            partition = (partition_for(key, self.partitions) if key is not None
                         else self.rng.randrange(self.partitions))
        return HostileRecord(topic, case, key, value,
                             self.now_ms if timestamp_ms is None else timestamp_ms, partition,
                             headers or [], risky)

    def instant(self, max_age_s: int = 86_400) -> str:
        """An RFC 3339 time up to ``max_age_s`` seconds ago, in a random offset and spelling."""
        at = datetime.fromtimestamp(self.now_ms / 1000 - self.rng.randint(1, max_age_s), UTC)
        offset = self.rng.choice([0, 0, 330, -660, 840, -720, 59])
        local = (at + timedelta(minutes=offset)).replace(tzinfo=None)
        sign = "+" if offset >= 0 else "-"
        zone = "Z" if offset == 0 and self.rng.random() < 0.7 else (
            f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}")
        text = local.isoformat(timespec=self.rng.choice(["seconds", "milliseconds",
                                                          "microseconds"]))
        return (text + zone).replace("T", self.rng.choice("Tt"))


@dataclass(frozen=True)
class _Stream:
    """How one input topic's valid records look: the case families every topic shares
    (:func:`_valid`, :func:`_again`) are built from it."""

    topic: str
    owner: str
    """The field the record key must equal."""
    make_doc: Callable[[_Gen], dict[str, Any]]
    sent: Callable[[_Gen], list[dict[str, Any]]]
    """The valid documents sent so far (resends pick from them)."""
    changed: Callable[[dict[str, Any]], dict[str, Any]]
    """The same event with other content (a conflict)."""
    stamp: Callable[[_Gen], int | None] = lambda g: None
    """The record time of a valid record (None: now)."""


def _valid(t: _Stream) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        doc = t.make_doc(g)
        t.sent(g).append(doc)
        return g.record(t.topic, "valid", doc[t.owner].encode(), orjson.dumps(doc),
                        timestamp_ms=t.stamp(g))
    return make


def _again(t: _Stream, case: str) -> Callable[[_Gen], HostileRecord]:
    """An earlier valid document sent again: unchanged (``duplicate``), with other content
    (``conflict``) or for another owner (``id of another owner``: a second event)."""
    def make(g: _Gen) -> HostileRecord:
        sent = t.sent(g)
        if not sent:
            _valid(t)(g)
        doc = g.rng.choice(sent)
        if case == "conflict":
            doc = t.changed(doc)
        elif case == "id of another owner":
            doc = {**doc, t.owner: g.student()}
            sent.append(doc)
        return g.record(t.topic, case, doc[t.owner].encode(), orjson.dumps(doc),
                        timestamp_ms=t.stamp(g))
    return make


# -- XP topic ---------------------------------------------------------------------------------

GAME_KINDS = ("typing", "choice", "quiz", "memory")


def _xp_doc(g: _Gen, student: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": g.uuid(), "student_id": student or g.student(),
                           "kind": g.rng.choice(GAME_KINDS), "delta": g.rng.randint(0, 50),
                           "created_at": g.instant()}
    if g.rng.random() < 0.3:
        doc["word_set_id"] = g.uuid().upper()
    if g.rng.random() < 0.1:
        doc["metadata"] = {"source": "hostile", "note": "ünïcödé ✓ \U0001f600"}
    return doc


def _xp_batch(g: _Gen) -> HostileRecord:
    student = g.student()
    docs = [_xp_doc(g, student) for _ in range(g.rng.randint(2, 20))]
    g.xp_sent.extend(docs)
    return g.record("xp", "valid batch", student.encode(), orjson.dumps(docs))


def _xp_extreme_delta(g: _Gen) -> HostileRecord:
    doc = _xp_doc(g)
    doc["kind"], doc["delta"] = g.rng.choice([("quiz", 1_000_000), ("adjustment", -1_000_000),
                                              ("adjustment", 0), ("quiz", 0)])
    g.xp_sent.append(doc)
    return g.record("xp", "delta at its bounds", doc["student_id"].encode(), orjson.dumps(doc))


def _random_bytes(topic: str) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        value = g.rng.randbytes(g.rng.choice([0, 1, 2, 16, 200, 3000]))
        key = g.rng.choice([None, b"", g.rng.randbytes(16), g.student().encode()])
        return g.record(topic, "random bytes", key, value)
    return make


def _invalid_utf8(topic: str, make_doc: Callable[[_Gen], dict[str, Any]], owner: str
                  ) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        doc = make_doc(g)
        raw = orjson.dumps(doc)
        bad = g.rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"])
        value = raw.replace(b'"' + doc[owner].encode(), b'"' + bad + doc[owner].encode(), 1)
        return g.record(topic, "invalid UTF-8", doc[owner].encode(), value)
    return make


DEPTHS = (1, 2, 64, 127, 128, 255, 256, 511, 512, 1023, 1024, 1025, 2000, 5000)


def _deep(topic: str, make_doc: Callable[[_Gen], dict[str, Any]], owner: str
          ) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        depth = g.rng.choice(DEPTHS)
        doc = make_doc(g)
        shape = g.rng.choice(["array", "object", "in metadata"])
        if shape == "array":
            value = b"[" * depth + b"]" * depth
        elif shape == "object":
            value = b'{"a":' * depth + b"1" + b"}" * depth
        else:
            nested = b'{"a":' * depth + b"1" + b"}" * depth
            value = orjson.dumps({**doc, "metadata": "@"}).replace(b'"@"', nested)
        return g.record(topic, f"JSON nested {depth} deep ({shape})", doc[owner].encode(), value)
    return make


NUMBERS = (b"9223372036854775807", b"9223372036854775808", b"-9223372036854775809",
           b"18446744073709551616", b"1e308", b"-1e308", b"1e309", b"1.7976931348623157e308",
           b"1" + b"0" * 400, b"NaN", b"Infinity", b"-0", b"1000001", b"4.5", b"1e2", b"0x10",
           b"5e-324")


def _big_number(topic: str, make_doc: Callable[[_Gen], dict[str, Any]], owner: str,
                fields: tuple[str, ...]) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        doc = make_doc(g)
        name = g.rng.choice(fields)
        number = g.rng.choice(NUMBERS)
        value = orjson.dumps({**doc, name: "@@"}).replace(b'"@@"', number)
        return g.record(topic, f"number {number[:24].decode()} in {name}", doc[owner].encode(),
                        value)
    return make


EDGE_TIMES = ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59Z",
              "9999-12-31T23:59:59.999999-12:00", "9999-12-31T23:59:59-23:59",
              "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "2038-01-19T03:14:08Z",
              "2026-02-29T12:00:00Z", "2024-02-29T12:00:00Z", "2016-12-31T23:59:60Z",
              "2026-13-01T00:00:00Z", "2026-06-01T24:00:00Z", "2026-06-01T12:00:00+24:00",
              "2026-06-01T12:00:00", "2026-06-01", "0000-00-00T00:00:00Z")


def _edge_time(topic: str, make_doc: Callable[[_Gen], dict[str, Any]], owner: str,
               name: str) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        doc = {**make_doc(g), name: g.rng.choice(EDGE_TIMES)}
        return g.record(topic, f"{name} at an edge", doc[owner].encode(), orjson.dumps(doc))
    return make


def _record_time(topic: str, make_doc: Callable[[_Gen], dict[str, Any]], owner: str
                 ) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        doc = make_doc(g)
        at = g.rng.choice([0, 1, g.now_ms - 2 * 366 * 86_400_000, g.now_ms - 365 * 86_400_000,
                           g.now_ms + 50 * 60_000])
        return g.record(topic, "record time far from now", doc[owner].encode(),
                        orjson.dumps(doc), timestamp_ms=at)
    return make


def _bad_key(topic: str, make_doc: Callable[[_Gen], dict[str, Any]], owner: str
             ) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        doc = make_doc(g)
        own = doc[owner]
        case, key = g.rng.choice([
            ("key of another owner", g.student().encode()), ("empty key", b""),
            ("no key", None), ("key in upper case", own.upper().encode()),
            ("key with invalid UTF-8", b"\xff" + own.encode()), ("key of 300 bytes", b"k" * 300),
            ("key with a NUL", own.encode() + b"\x00"), ("key with spaces", f" {own} ".encode())])
        return g.record(topic, case, key, orjson.dumps(doc),
                        partition=partition_for(own.encode(), g.partitions))
    return make


def _wrong_partition(topic: str, make_doc: Callable[[_Gen], dict[str, Any]], owner: str
                     ) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        doc = make_doc(g)
        right = partition_for(doc[owner].encode(), g.partitions)
        wrong = (right + g.rng.randrange(1, g.partitions)) % g.partitions if g.partitions > 1 \
            else right
        return g.record(topic, "wrong partition", doc[owner].encode(), orjson.dumps(doc),
                        partition=wrong)
    return make


JUNK_HEADERS = (("reason", b"forged"), ("source_topic", b"xp-events"), ("source_offset", b"-1"),
                ("", b""), ("\u00e9\u2603", b"\xff\xfe"), ("x" * 300, b"y" * 3000),
                ("traceparent", b"00-" + b"0" * 50), ("content-type", b"application/x-junk"))


def _junk_headers(topic: str, make_doc: Callable[[_Gen], dict[str, Any]], owner: str,
                  sent: list[dict[str, Any]] | None) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        doc = make_doc(g)
        if sent is not None:
            sent.append(doc)
        headers = [g.rng.choice(JUNK_HEADERS) for _ in range(g.rng.randint(1, 6))]
        return g.record(topic, "junk headers", doc[owner].encode(), orjson.dumps(doc),
                        headers=headers)
    return make


def _nul(topic: str, make_doc: Callable[[_Gen], dict[str, Any]], owner: str
         ) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        doc = make_doc(g)
        where = g.rng.choice(["value", "key of metadata", "raw"])
        if where == "value":
            doc["metadata"] = {"source": "a\u0000b"}
            value = orjson.dumps(doc)
        elif where == "key of metadata":
            doc["metadata"] = {"a\u0000": 1}
            value = orjson.dumps(doc)
        else:
            value = orjson.dumps(doc)[:-1] + b',"\x00":1}'
        return g.record(topic, f"NUL in {where}", doc[owner].encode(), value)
    return make


def _schema(topic: str, make_doc: Callable[[_Gen], dict[str, Any]], owner: str
            ) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        doc = make_doc(g)
        name = g.rng.choice([k for k in doc if k != owner])
        case, value = g.rng.choice([
            ("a field missing", orjson.dumps({k: v for k, v in doc.items() if k != name})),
            ("an unknown field", orjson.dumps({**doc, "bonus": 10**6})),
            ("a field of the wrong type", orjson.dumps({**doc, name: [doc[name]]})),
            ("a field null", orjson.dumps({**doc, name: None})),
            ("a field of 100,000 characters", orjson.dumps({**doc, name: "x" * 100_000})),
            ("an id that is no UUID", orjson.dumps({**doc, "id": "not-a-uuid"})),
            ("JSON null", b"null"), ("an empty array", b"[]"), ("a string", b'"x"'),
            ("a number", b"0"), ("an empty object", b"{}"), ("whitespace", b"  \n\t "),
            ("a duplicate key", orjson.dumps(doc)[:-1] + b',"id":"' + g.uuid().encode() + b'"}'),
            ("a byte-order mark", b"\xef\xbb\xbf" + orjson.dumps(doc)),
            ("trailing garbage", orjson.dumps(doc) + b"}"),
        ])
        return g.record(topic, f"schema: {case}", doc[owner].encode(), value)
    return make


def _tombstone(topic: str, make_doc: Callable[[_Gen], dict[str, Any]], owner: str
               ) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        return g.record(topic, "tombstone (no value)", make_doc(g)[owner].encode(), None)
    return make


def _size(topic: str, make_doc: Callable[[_Gen], dict[str, Any]], owner: str
          ) -> Callable[[_Gen], HostileRecord]:
    def make(g: _Gen) -> HostileRecord:
        doc = make_doc(g)
        target = g.limits.record_bytes + g.rng.choice([-1, 0, 1, 1000])
        doc["metadata"] = {"source": "x"}
        pad = target - len(orjson.dumps(doc)) + len('"x"') - 2
        doc["metadata"] = {"source": "x", "pad": "p" * max(0, pad)}
        value = orjson.dumps(doc)
        return g.record(topic, f"value at the record limit {len(value) - g.limits.record_bytes:+d}"
                        " bytes", doc[owner].encode(), value)
    return make


def near_broker_limit(g: _Gen, topic: str, make_doc: Callable[[_Gen], dict[str, Any]],
                      owner: str) -> list[HostileRecord]:
    """Two records sized a few hundred bytes under and over the broker's message limit."""
    out = []
    for size in (BROKER_MESSAGE_BYTES - 200, BROKER_MESSAGE_BYTES + 100):
        doc = make_doc(g)
        doc["metadata"] = {"pad": "p" * (size - len(orjson.dumps(doc)) - 20)}
        out.append(g.record(topic, "value at the broker's size limit", doc[owner].encode(),
                            orjson.dumps(doc), risky=True))
    return out


# -- actions topic ----------------------------------------------------------------------------

VECTORS = ("health", "relationships", "career", "finances", "growth")


def _action_doc(g: _Gen, profile: str | None = None) -> dict[str, Any]:
    at = g.instant(3 * 86_400)
    doc: dict[str, Any] = {"id": g.uuid(), "action_id": f"apply_{g.rng.choice(VECTORS)}",
                           "profile_id": profile or g.student(), "source": "dashboard",
                           "vector": g.rng.choice(VECTORS), "selected_at": at}
    if g.rng.random() < 0.6:
        doc["completed_at"] = at
        doc["duration"] = g.rng.choice([1, 12.6, 300, 86_400])
    return doc


# -- claims topic -----------------------------------------------------------------------------

ZONES = ("Europe/Stockholm", "America/New_York", "Asia/Kolkata", "Pacific/Kiritimati",
         "Pacific/Pago_Pago", "Australia/Lord_Howe", "America/St_Johns", "UTC")
EDGE_ZONES = ("Factory", "EST5EDT", "PST8PDT", "Etc/GMT+12", "Etc/GMT-14", "posixrules",
              "localtime", "Europe/Kiev", "Europe/Kyiv", "America/Argentina/ComodRivadavia",
              "US/Pacific-New", "", " ", "../../etc/passwd", "/etc/localtime", "Europe/",
              "europe/stockholm", "Z" * 300, "America/" + "A" * 292, "\u00e9t\u00e9",
              "Etc/Unknown", "GMT0", "ROC")


def _claim_doc(g: _Gen, student: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "daily_login_claim", "id": g.uuid(),
                           "student_id": student or g.student(),
                           "client_tz": g.rng.choice(ZONES)}
    if g.rng.random() < 0.3:
        doc["client_time"] = g.instant(3600)
    return doc


def _claim_at(g: _Gen) -> int:
    return g.now_ms - g.rng.randint(0, 30 * 86_400_000)


def _claim_zone(g: _Gen) -> HostileRecord:
    doc = _claim_doc(g)
    zone = g.rng.choice(EDGE_ZONES)
    if g.rng.random() < 0.3:
        doc = {"type": "reward_tz_change", "id": doc["id"], "student_id": doc["student_id"],
               "reward_tz": zone}
    else:
        doc["client_tz"] = zone
    return g.record("claims", f"zone {zone[:20]!r}", doc["student_id"].encode(),
                    orjson.dumps(doc), timestamp_ms=_claim_at(g))


def _claim_time(g: _Gen) -> HostileRecord:
    doc = _claim_doc(g)
    case, at, risky = g.rng.choice([
        ("stamped 40-55 min ahead", g.now_ms + 1000 * g.rng.randint(*FUTURE_CLAIM_S), False),
        ("stamped 2 h ahead", g.now_ms + 7_200_000, True),
        ("stamped in 2031", int(datetime(2031, 1, 1, tzinfo=UTC).timestamp() * 1000), True),
        ("stamped in 9999", int(datetime(9999, 12, 31, tzinfo=UTC).timestamp() * 1000), True),
        ("stamped at the epoch", 0, False), ("stamped 400 days ago",
                                             g.now_ms - 400 * 86_400_000, False)])
    return g.record("claims", case, doc["student_id"].encode(), orjson.dumps(doc),
                    timestamp_ms=at, risky=risky)


def _with_claim_time(make: Callable[[_Gen], HostileRecord]) -> Callable[[_Gen], HostileRecord]:
    def stamped(g: _Gen) -> HostileRecord:
        r = make(g)
        r.timestamp_ms = _claim_at(g)
        return r
    return stamped


# -- policies topic ---------------------------------------------------------------------------

def _policies(g: _Gen) -> list[HostileRecord]:
    """The policies topic's campaign: the claim policy first, then hostile versions."""
    base = CLAIM_POLICY["definition"]

    def policy(version: int, effective: str, **definition: Any) -> dict[str, Any]:
        return {"kind": "policy", "policy_id": "daily_login", "version": version,
                "effective_day": effective, "definition": {**base, **definition}}

    far = (datetime.fromtimestamp(g.now_ms / 1000, UTC) + timedelta(days=30)).date().isoformat()
    values: list[tuple[str, bytes | None]] = [
        ("random bytes", g.rng.randbytes(100)), ("bad JSON", b"{"), ("JSON null", b"null"),
        ("tombstone", None), ("schema: an empty object", b"{}"),
        ("JSON nested 5000 deep", b'{"a":' * 5000 + b"1" + b"}" * 5000),
        ("effective 9999-12-31", orjson.dumps(policy(2, "9999-12-31"))),
        ("effective 0001-01-01", orjson.dumps(policy(3, "0001-01-01"))),
        ("base_xp 2^63", orjson.dumps(policy(4, far, base_xp=2**63 - 1))),
        ("base_xp 1e308", orjson.dumps(policy(5, far)).replace(b'"base_xp":10',
                                                                 b'"base_xp":1e308')),
        ("a window of 0 XP", orjson.dumps(policy(6, far, windows=[
            {"from": "00:00", "to": "01:00", "pct": 1}]))),
        ("version 2^63", orjson.dumps(policy(2**63 - 1, far))),
        ("a valid later version", orjson.dumps(policy(7, far))),
        ("the same version again, other content", orjson.dumps(policy(7, far, base_xp=11))),
        ("a calendar up to 9999", orjson.dumps({
            "kind": "season_calendar", "policy_id": "seasons", "version": 1, "seasons": [
                {"season_id": "all", "starts_at": "0001-01-01T00:00:00Z",
                 "ends_at": "9999-12-31T23:59:59Z"}]})),
        ("a calendar with a 300-character season", orjson.dumps({
            "kind": "season_calendar", "policy_id": "seasons", "version": 2, "seasons": [
                {"season_id": "s" * 300, "starts_at": f"{far}T00:00:00Z",
                 "ends_at": f"{far}T00:00:01Z"}]})),
    ]
    # One at a time (risky): the topic is compacted, so the broker refuses a record without a
    # key, and with it every record of its batch.
    out = [g.record("policies", "the claim policy", b"daily_login:1", orjson.dumps(CLAIM_POLICY),
                    timestamp_ms=CLAIM_POLICY_PUBLISHED_MS, partition=0, risky=True)]
    for case, value in values:
        key = g.rng.choice([b"daily_login:9", b"", None])
        out.append(g.record("policies", case if key else f"{case} (no key)", key, value,
                            partition=0, risky=True))
    return out


XP = _Stream("xp", "student_id", lambda g: _xp_doc(g), lambda g: g.xp_sent,
             lambda doc: {**doc, "delta": doc["delta"] + 1})
ACTIONS = _Stream("actions", "profile_id", lambda g: _action_doc(g), lambda g: g.actions_sent,
                  lambda doc: {**doc, "source": "feed"})
CLAIMS = _Stream("claims", "student_id", lambda g: _claim_doc(g), lambda g: g.claims_sent,
                 lambda doc: {**doc, "client_tz": "Asia/Tokyo"}, lambda g: _claim_at(g))


def _cases() -> dict[str, list[tuple[Callable[[_Gen], HostileRecord], float]]]:
    """Per topic, the generator cases and their weights."""
    def hostile(topic: str, make_doc: Callable[[_Gen], dict[str, Any]], owner: str,
                numbers: tuple[str, ...], time_field: str, sent: list[dict[str, Any]] | None,
                stamp: Callable[[Callable[[_Gen], HostileRecord]], Callable[[_Gen],
                                                                           HostileRecord]]
                ) -> list[tuple[Callable[[_Gen], HostileRecord], float]]:
        return [(stamp(f), w) for f, w in [
            (_random_bytes(topic), 3), (_invalid_utf8(topic, make_doc, owner), 2),
            (_deep(topic, make_doc, owner), 2),
            (_big_number(topic, make_doc, owner, numbers), 2),
            (_edge_time(topic, make_doc, owner, time_field), 2),
            (_bad_key(topic, make_doc, owner), 3), (_wrong_partition(topic, make_doc, owner), 1),
            (_junk_headers(topic, make_doc, owner, sent), 2), (_nul(topic, make_doc, owner), 1),
            (_schema(topic, make_doc, owner), 3), (_tombstone(topic, make_doc, owner), 0.5),
            (_size(topic, make_doc, owner), 0.3)]]

    def same(f: Callable[[_Gen], HostileRecord]) -> Callable[[_Gen], HostileRecord]:
        return f

    return {
        "xp": [(_valid(XP), 45), (_xp_batch, 3), (_again(XP, "duplicate"), 6),
               (_again(XP, "conflict"), 1), (_again(XP, "id of another owner"), 2),
               (_xp_extreme_delta, 0.5),
               (_record_time("xp", _xp_doc, "student_id"), 1),
               *hostile("xp", _xp_doc, "student_id", ("delta",), "created_at", None, same)],
        "actions": [(_valid(ACTIONS), 45), (_again(ACTIONS, "duplicate"), 6),
                    (_again(ACTIONS, "conflict"), 1), (_again(ACTIONS, "id of another owner"), 2),
                    (_record_time("actions", _action_doc, "profile_id"), 1),
                    *hostile("actions", _action_doc, "profile_id", ("duration",),
                             "selected_at", None, same)],
        "claims": [(_valid(CLAIMS), 40), (_again(CLAIMS, "duplicate"), 6),
                   (_again(CLAIMS, "conflict"), 1), (_again(CLAIMS, "id of another owner"), 2),
                   (_claim_zone, 8), (_claim_time, 3),
                   *hostile("claims", _claim_doc, "student_id", ("client_tz", "client_time"),
                            "client_time", None, _with_claim_time)],
    }


def generate(records: int, seed: int, settings: Settings, students: int = 2000,
             now_ms: int | None = None) -> list[HostileRecord]:
    """The campaign's records in publish order: the policies first (the claim policy at their
    head), then XP, action and claim records interleaved, then the near-broker-limit ones.

    Args:
        records: records in all (at least 100).
        seed: the same seed, settings and clock give the same records.
        settings: the partition count and input limits the cases are sized against.
        students: distinct owners (students and profiles share one pool).
        now_ms: the clock (ms since the epoch); default now.
    """
    rng = random.Random(seed)  # noqa: S311 - a reproducible campaign
    g = _Gen(rng, int(time.time() * 1000) if now_ms is None else now_ms,
             settings.topic_partitions, settings.limits(),
             [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(students)])
    out = _policies(g)
    cases = _cases()
    tail = [*near_broker_limit(g, "xp", _xp_doc, "student_id"),
            *near_broker_limit(g, "actions", _action_doc, "profile_id")]
    topics = list(SHARES)
    weights = list(SHARES.values())
    while len(out) + len(tail) < records:
        topic = rng.choices(topics, weights)[0]
        makers, case_weights = zip(*cases[topic], strict=True)
        out.append(rng.choices(makers, case_weights)[0](g))
    return out + tail


def poison(count: int, seed: int, settings: Settings, now_ms: int | None = None
           ) -> list[tuple[HostileRecord, str]]:
    """``count`` hostile records of the XP topic that validation refuses, each with its DLQ
    reason (``streams lab chaos``'s poison burst): drawn from the XP cases, keeping those
    :func:`streams.events.decode_record` refuses and the broker takes (no risky ones)."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible burst
    g = _Gen(rng, int(time.time() * 1000) if now_ms is None else now_ms,
             settings.topic_partitions, settings.limits(),
             [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(200)])
    makers, weights = zip(*_cases()["xp"], strict=True)
    out: list[tuple[HostileRecord, str]] = []
    while len(out) < count:
        r = rng.choices(makers, weights)[0](g)
        if r.risky:
            continue
        try:
            decode_record(r.key, r.value, g.limits, (r.partition, g.partitions),
                          r.timestamp_ms / 1000)
        except InvalidEvent as exc:
            out.append((r, exc.reason))
    return out


# -- the expectation --------------------------------------------------------------------------

@dataclass
class Expected:
    """What the pipeline must make of the records the broker accepted."""

    dlq: dict[str, Counter[str]] = field(default_factory=lambda: {t: Counter() for t in TOPICS})
    """Per topic, records dead-lettered by reason (policies: refused by reason, or applied)."""
    xp_events: set[tuple[str, str]] = field(default_factory=set)
    """(event id, student) of every valid XP event: the ledger's rows (awards apart)."""
    action_events: set[tuple[str, str]] = field(default_factory=set)
    """(event id, profile) of every valid action event."""
    reasons_at: dict[tuple[str, int, int], str] = field(default_factory=dict)
    """(topic, partition, offset) -> DLQ reason of every record expected in a DLQ."""
    cases_at: dict[tuple[str, int, int], str] = field(default_factory=dict)
    """(topic, partition, offset) -> the case of every accepted record."""


def expect(accepted: list[tuple[HostileRecord, int]], settings: Settings, now_s: float
           ) -> Expected:
    """Decide each accepted record (with its offset) as the pipeline's validation does: the
    decoders of :mod:`streams.events` and :mod:`streams.grant.decide` with the record's own
    key, value, position and timestamp; a claim further ahead of ``now_s`` than
    ``XP_CLAIM_MAX_AHEAD_SECONDS`` is ``claim_in_future``; policies records go through the
    feed's own rule (:func:`streams.policy_feed.refusal`) in order."""
    out = Expected()
    limits = settings.limits()
    n = settings.topic_partitions
    policies = Policies()
    for r, offset in accepted:
        at = (r.topic, r.partition, offset)
        out.cases_at[at] = r.case
        try:
            if r.topic == "xp":
                for ev in decode_record(r.key, r.value, limits, (r.partition, n),
                                        r.timestamp_ms / 1000):
                    out.xp_events.add((ev.id, ev.student_id))
            elif r.topic == "actions":
                action = decode_action(r.key, r.value, limits, (r.partition, n),
                                       r.timestamp_ms / 1000)
                out.action_events.add((action.id, action.profile_id))
            elif r.topic == "claims":
                claim = decode_claim(r.key, r.value, limits, r.timestamp_ms, r.partition,
                                     offset, n)
                if claim.timestamp_us / 1e6 - now_s > settings.claim_max_ahead_seconds:
                    out.dlq["claims"][IN_FUTURE] += 1
                    out.reasons_at[at] = IN_FUTURE
            else:
                out.dlq["policies"][_policy_result(r, settings, policies)] += 1
        except InvalidEvent as exc:
            out.dlq[r.topic][exc.reason] += 1
            out.reasons_at[at] = exc.reason
    out.dlq["policies"].pop("tombstone", None)
    return out


def _policy_result(r: HostileRecord, settings: Settings, policies: Policies) -> str:
    """``applied``, ``tombstone`` or the refusal's kind, as the grant stream's policy feed
    counts it (its own :func:`streams.policy_feed.judge`)."""
    seen = SimpleNamespace(value=r.value, timestamp=r.timestamp_ms)  # what judge reads
    value, why = judge(cast(Any, seen), settings.policy_min_lead_seconds, policies)
    if why is not None:
        return why.split(":", 1)[0]
    if value is None:
        return "tombstone"
    apply(value, policies)
    return "applied"


# -- the run ----------------------------------------------------------------------------------

@dataclass
class Report:
    """A campaign's figures and its verdict."""

    records: int = 0
    seed: int = 0
    partitions: int = 0
    published: dict[str, int] = field(default_factory=dict)
    refused_by_broker: dict[str, int] = field(default_factory=dict)
    """Records the broker (or the producer, for its size) refused, per case."""
    cases: dict[str, int] = field(default_factory=dict)
    """Records per ``topic: case``."""
    reasons: list[tuple[str, str, int, int]] = field(default_factory=list)
    """(topic, reason, pipeline, expected) of every DLQ reason and policy result."""
    ledger_rows: tuple[int, int] = (0, 0)
    """XP ledger rows from game servers (pipeline, expected)."""
    action_rows: tuple[int, int] = (0, 0)
    awards: int = 0
    differing: list[str] = field(default_factory=list)
    """The first 20 records whose fate differs from the expectation (position, case)."""
    exits: list[str] = field(default_factory=list)
    stalls: list[str] = field(default_factory=list)
    mismatched_students: int = 0
    sink_refused: int = 0
    audit_differences: int = 0
    seconds_to_lag0: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every record decided or dead-lettered as expected, and no process exit or stall."""
        return not self.problems

    def to_json(self) -> bytes:
        """The report as JSON (``--json``)."""
        from dataclasses import asdict

        return orjson.dumps({**asdict(self), "ok": self.ok}, option=orjson.OPT_INDENT_2)


def _topic(settings: Settings, name: str) -> str:
    return {"xp": settings.xp_topic, "actions": settings.action_topic,
            "claims": settings.claims_topic, "policies": settings.policies_topic}[name]


async def publish(settings: Settings, records: list[HostileRecord],
                  progress: Callable[[int], None] | None = None
                  ) -> tuple[list[tuple[HostileRecord, int]], list[HostileRecord]]:
    """Publish ``records`` in order; a risky one alone, once every record before it is
    acknowledged: the broker may refuse it, and a refusal takes its whole batch along.

    Returns:
        (accepted records with their offsets, records the broker or producer refused).
    """
    producer = kafka.producer(settings, enable_idempotence=False,
                              max_request_size=2 * BROKER_MESSAGE_BYTES)
    await kafka.start(producer)
    accepted: list[tuple[HostileRecord, int]] = []
    refused: list[HostileRecord] = []
    sent = 0

    async def send(batch: list[HostileRecord]) -> None:
        nonlocal sent
        futures = [await producer.send(_topic(settings, r.topic), r.value, key=r.key,
                                       partition=r.partition, timestamp_ms=r.timestamp_ms,
                                       headers=r.headers) for r in batch]
        for r, meta in zip(batch, await asyncio.gather(*futures, return_exceptions=True),
                           strict=True):
            if isinstance(meta, KafkaError):
                refused.append(r)
            elif isinstance(meta, BaseException):
                raise meta
            else:
                accepted.append((r, meta.offset))
        before, sent = sent, sent + len(batch)
        if progress is not None and sent // 10_000 > before // 10_000:
            progress(sent)

    try:
        pending: list[HostileRecord] = []
        for r in records:
            if r.risky or len(pending) >= 5000:
                await send(pending)
                pending = []
            if r.risky:
                await send([r])
            else:
                pending.append(r)
        await send(pending)
    finally:
        await producer.stop()
    return accepted, refused


def _counter_by_label(proc: PipelineProcess, name: str) -> dict[str, float]:
    """Samples of the counter ``name`` on ``proc``'s /metrics, summed by their first label's
    value."""
    out: dict[str, float] = {}
    for sample in proc.metrics():
        if sample.name == name and sample.labels:
            label = next(iter(sample.labels.values()))
            out[label] = out.get(label, 0.0) + sample.value
    return out


class Campaign:
    """One campaign on the servers of ``settings`` in a scratch schema and topics of its own.

    Args:
        settings: broker, database, partitions and the pipeline's limits.
        records: records to generate (the default run is 100,000).
        seed: seeds the generators.
        workdir: the processes' logs and table stores.
        timeout_s: the deadline for every consumer group to reach lag 0 (a group still behind
            then is a stall).
        say: progress lines.
    """

    def __init__(self, settings: Settings, records: int, seed: int, workdir: Path,
                 timeout_s: float = 600.0, say: Callable[[str], None] = print) -> None:
        self.scratch = Scratch(settings, "hostile", workdir)
        self.settings = self.scratch.base.with_(
            sink_dlq_topic=f"{self.scratch.prefix}-sinks.dlq", metrics_port=free_port())
        self.records = records
        self.seed = seed
        self.workdir = workdir
        self.timeout_s = timeout_s
        self.say = say

    def run(self) -> Report:
        """Set up, publish, wait for lag 0, check; the scratch schema and topics are dropped
        afterwards, the logs kept when a check failed."""
        s = self.settings
        report = Report(records=self.records, seed=self.seed, partitions=s.topic_partitions)
        procs = [PipelineProcess(command, s, self.workdir / f"{command}.log",
                                 s.metrics_port if command == "worker" else free_port())
                 for command in dict.fromkeys(st.command for st in topology.stages(s))]
        made = False
        try:
            self.scratch.setup()
            made = True
            try:
                self.scratch.add_topics(s)
            except BaseException:
                self.scratch.topics.clear()  # none made: nothing to delete
                raise
            self.scratch.topics.append(s.sink_dlq_topic)
            for proc in procs:
                proc.start()
            self.say(f"started {', '.join(p.command for p in procs)} (logs in {self.workdir})")
            records = generate(self.records, self.seed, s)
            now_s = time.time()
            report.cases = dict(sorted(Counter(f"{r.topic}: {r.case}" for r in records).items()))
            self.say(f"publishing {len(records):,} hostile records (seed {self.seed}) ...")
            accepted, refused = asyncio.run(publish(
                s, records, lambda n: self.say(f"  published {n:,}")))
            report.published = dict(Counter(r.topic for r, _ in accepted))
            report.refused_by_broker = dict(Counter(f"{r.topic}: {r.case}" for r in refused))
            expected = expect(accepted, s, now_s)
            started = time.monotonic()
            self._wait(procs, report)
            report.seconds_to_lag0 = time.monotonic() - started
            report.exits = [p.command for p in procs if not p.alive()]
            self._check(procs, expected, report)
        finally:
            for proc in procs:
                proc.stop()
            if made:
                self.scratch.cleanup(self.say)
        return report

    def _wait(self, procs: list[PipelineProcess], report: Report) -> None:
        """Wait for lag 0 of every (group, topic): sources first, then the changelogs."""
        s = self.settings
        sources = {s.xp_topic, s.action_topic, s.claims_topic, s.policies_topic}

        def progress(lags: dict[str, int]) -> None:
            shown = ", ".join(f"{g}={'-' if v < 0 else f'{v:,}'}" for g, v in lags.items() if v)
            self.say(f"  waiting for lag 0: {shown or 'all caught up'}")

        for pairs in ([p for p in topology.group_topics(s) if p[1] in sources],
                      [p for p in topology.group_topics(s) if p[1] not in sources]):
            try:
                asyncio.run(kafka_wait(s, pairs, self.timeout_s, progress))
            except TimeoutError as exc:
                report.stalls.append(str(exc))

    def _check(self, procs: list[PipelineProcess], expected: Expected, report: Report) -> None:
        s = self.settings
        problems = report.problems
        dlq_topics = {"xp": s.dlq_topic, "actions": s.action_dlq_topic,
                      "claims": s.claims_dlq_topic}
        sources = {v: k for k, v in dlq_topics.items()} | {
            _topic(s, name): name for name in TOPICS}
        for name, topic in dlq_topics.items():
            at = {(sources.get(t, t), p, o): reason for (t, p, o), reason in
                  asyncio.run(dlq_sources(s, timeout_s=60, topic=topic)).items()}
            got = Counter(at.values())
            want = expected.dlq[name]
            for reason in sorted(set(got) | set(want)):
                report.reasons.append((name, reason, got.get(reason, 0), want.get(reason, 0)))
            wanted = {k: v for k, v in expected.reasons_at.items() if k[0] == name}
            for key in sorted(set(at) | set(wanted)):
                if at.get(key) != wanted.get(key) and len(report.differing) < 20:
                    report.differing.append(
                        f"{name} {key[1]}/{key[2]} ({expected.cases_at.get(key, '?')}): "
                        f"{at.get(key, 'decided')} in the pipeline, "
                        f"{wanted.get(key, 'decided')} expected")
        worker = next(p for p in procs if p.command == "worker")
        policies = _counter_by_label(worker, "xp_grant_policy_records_total")
        for result in sorted(set(policies) | set(expected.dlq["policies"])):
            report.reasons.append(("policies", result, int(policies.get(result, 0)),
                                   expected.dlq["policies"].get(result, 0)))
        for topic, reason, got_n, want_n in report.reasons:
            if got_n != want_n:
                problems.append(f"{topic} {reason}: {got_n:,} in the pipeline, {want_n:,} "
                                "expected")
        with connect(s.database_url) as conn, mapped_errors(s.database_url):
            xp_rows, awards, action_rows = conn.execute(
                lab_query("campaign_counts")).fetchone() or (0, 0, 0)
        report.awards = awards
        report.ledger_rows = (xp_rows - awards, len(expected.xp_events))
        report.action_rows = (action_rows, len(expected.action_events))
        for what, (got_n, want_n) in (("XP ledger rows (awards apart)", report.ledger_rows),
                                      ("action ledger rows", report.action_rows)):
            if got_n != want_n:
                problems.append(f"{what}: {got_n:,} in the pipeline, {want_n:,} expected")
        report.mismatched_students = len(mismatched_students(s.database_url))
        report.sink_refused = sum(asyncio.run(count_dlq(s, topic=s.sink_dlq_topic)).values())
        audit = asyncio.run(audit_changelogs(s))
        report.audit_differences = len(audit.differences)
        report.differing += [f"changelog audit: {d.to_dict()}" for d in audit.differences[:10]]
        for what, n in (("processes exited", len(report.exits)),
                        ("stalls", len(report.stalls)),
                        ("students with totals != SUM(ledger)", report.mismatched_students),
                        ("rows refused by PostgreSQL (sink DLQ)", report.sink_refused),
                        ("changelog audit differences", report.audit_differences)):
            if n:
                problems.append(f"{what}: {n}")


async def kafka_wait(settings: Settings, pairs: list[tuple[str, str]], timeout_s: float,
                     progress: Callable[[dict[str, int]], None]) -> None:
    """:func:`streams.lag.wait_caught_up` with a progress line every 5 s."""
    from streams.lag import wait_caught_up

    last = [0.0]

    def every_5s(lags: dict[str, int]) -> None:
        if time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            progress(lags)

    await wait_caught_up(settings, pairs, timeout_s, every_5s, 0.5)


def render(report: Report) -> Any:
    """The report as rich tables: DLQ and policy results per reason, then the verdict rows."""
    from rich.table import Table

    table = Table(title=f"hostile-input campaign: {sum(report.published.values()):,} records "
                        f"accepted by the broker (seed {report.seed}, {report.partitions} "
                        "partitions)")
    table.add_column("topic")
    table.add_column("what")
    table.add_column("pipeline", justify="right")
    table.add_column("expected", justify="right")
    for topic, n in sorted(report.published.items()):
        table.add_row(topic, "records published", f"{n:,}", "")
    for what, n in sorted(report.refused_by_broker.items()):
        table.add_row(what.split(":")[0], f"refused by the broker: {what.split(': ', 1)[1]}",
                      f"{n:,}", "")
    for topic, reason, got, want in report.reasons:
        label = "policy records" if topic == "policies" else "DLQ"
        table.add_row(topic, f"{label}: {reason}", f"{got:,}", f"{want:,}")
    table.add_row("xp", "ledger rows (awards apart)", f"{report.ledger_rows[0]:,}",
                  f"{report.ledger_rows[1]:,}")
    table.add_row("xp", "awards (xp_awards rows)", f"{report.awards:,}", "")
    table.add_row("actions", "ledger rows", f"{report.action_rows[0]:,}",
                  f"{report.action_rows[1]:,}")
    for what, got in (("processes exited", len(report.exits)), ("stalls", len(report.stalls)),
                      ("students: totals != SUM(ledger)", report.mismatched_students),
                      ("rows refused by PostgreSQL", report.sink_refused),
                      ("changelog audit differences", report.audit_differences)):
        table.add_row("all", what, f"{got:,}", "0")
    table.add_row("all", "seconds from the last publish to lag 0",
                  f"{report.seconds_to_lag0:,.1f}", "")
    return table
