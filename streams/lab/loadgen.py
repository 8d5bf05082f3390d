"""Load generator: a deterministic, realistic XP workload and its expected outcome.

Given a seed, :func:`generate` always builds the same records (docs/design.md guarantees 1-3, 5 are
checked against its :class:`Expected`):
- students with skewed activity (Zipf weights: a few very active, a long tail);
- several game kinds, in bursts of one student's events, created_at out of order within a
  student now and then, with mixed UTC offsets;
- duplicates (the same record resent), some soon after the original, some much later;
- conflicts (same id, other content: the first one wins);
- invalid records of every DLQ reason: bad JSON, schema violations, negative delta outside
  ``adjustment``, key not matching the student, oversized.

The expected outcome is computed by a model independent of the pipeline code: per student the
sum of original deltas, the count of original game events, and the kind of the game event with
the latest created_at (ties: the later record).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from streams.events import NON_GAME_KINDS
from streams.policies import Calendar
from streams.settings import Settings

KINDS: tuple[tuple[str, float, int, int], ...] = (
    ("typing", 0.35, 5, 20),
    ("choice", 0.25, 1, 10),
    ("quiz", 0.18, 10, 50),
    ("memory", 0.10, 5, 25),
    ("daily_login", 0.08, 5, 5),
    ("adjustment", 0.04, -20, 20),
)
"""(kind, share, min delta, max delta) of generated events."""

INVALID_REASONS = ("bad_json", "schema", "negative_delta", "key_mismatch", "oversized")
"""The DLQ reasons the generator produces, in rotation."""

OFFSETS = (UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5)))


@dataclass(frozen=True)
class LoadSpec:
    """What to generate. Ratios are shares of ``events``."""

    events: int = 200_000
    """Records in all (originals + duplicates + conflicts + invalid)."""
    students: int = 10_000
    """Distinct students."""
    seed: int = 1
    """Random seed: the same spec gives the same records."""
    duplicate_ratio: float = 0.05
    """Share of records that resend an earlier record unchanged."""
    conflict_ratio: float = 0.002
    """Share of records that reuse an earlier id with other content."""
    invalid_ratio: float = 0.01
    """Share of records that are invalid (rotating through :data:`INVALID_REASONS`)."""
    max_record_bytes: int = 64 * 1024
    """The pipeline's record size limit; oversized records exceed it."""


@dataclass
class Expected:
    """The outcome the pipeline must produce for a workload."""

    records: int = 0
    """Records published."""
    valid_unique: int = 0
    """Distinct valid event ids (= ledger rows)."""
    duplicates: int = 0
    """Records dropped as duplicates."""
    conflicts: int = 0
    """Records dropped as conflicts."""
    invalid: dict[str, int] = field(default_factory=dict)
    """DLQ records by reason."""
    students: dict[str, list[Any]] = field(default_factory=dict)
    """student_id -> [total_xp, games_played, last_game_type]."""

    def to_json(self) -> bytes:
        """Serialise (for ``--expected FILE``)."""
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_file(cls, path: Path) -> Expected:
        """Read a file written by :meth:`to_json`."""
        return cls(**orjson.loads(path.read_bytes()))


Record = tuple[bytes | None, bytes]
"""(key, value) of one Kafka record."""


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def workload_start(events: int) -> datetime:
    """The created_at of a workload's first event: midnight UTC today, less a day and the
    workload's span (events 0.2 s apart on average), so every created_at lies in the past and
    within the input bounds (``XP_MAX_FUTURE_SECONDS``/``XP_MAX_PAST_SECONDS``, checked against
    the record's timestamp), and the same spec gives the same records all day. (A fixed date
    put a 2M-event workload days into the future: its later events went to the DLQ as
    ``timestamp_out_of_range``.)"""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1, seconds=events * 0.25)


def generate(spec: LoadSpec) -> tuple[list[Record], Expected]:
    """Build the records of ``spec`` in publish order, and their expected outcome."""
    rng = random.Random(spec.seed)  # noqa: S311 - seeded on purpose
    students = [_uuid(rng) for _ in range(spec.students)]
    cum_weights = list(itertools.accumulate(1.0 / (i + 1) ** 1.1 for i in range(spec.students)))
    n_invalid = round(spec.events * spec.invalid_ratio)
    n_dup = round(spec.events * spec.duplicate_ratio)
    n_conflict = round(spec.events * spec.conflict_ratio)
    n_orig = max(1, spec.events - n_invalid - n_dup - n_conflict)
    kinds = [k[0] for k in KINDS]
    kind_weights = [k[1] for k in KINDS]
    ranges = {k[0]: (k[2], k[3]) for k in KINDS}
    clock = workload_start(spec.events)

    originals: list[dict[str, Any]] = []
    while len(originals) < n_orig:
        student = rng.choices(students, cum_weights=cum_weights)[0]
        for _ in range(min(rng.randint(1, 8), n_orig - len(originals))):  # a burst
            kind = rng.choices(kinds, kind_weights)[0]
            lo, hi = ranges[kind]
            clock += timedelta(microseconds=rng.randint(1, 400_000))
            at = clock - timedelta(seconds=rng.randint(1, 600)) if rng.random() < 0.1 else clock
            event: dict[str, Any] = {
                "id": _uuid(rng), "student_id": student, "kind": kind,
                "delta": rng.randint(lo, hi),
                "created_at": at.astimezone(rng.choice(OFFSETS)).isoformat(timespec="microseconds"),
            }
            if rng.random() < 0.5:
                event["word_set_id"] = _uuid(rng)
            if rng.random() < 0.2:
                event["homework_id"] = _uuid(rng)
            if rng.random() < 0.3:
                event["metadata"] = {"score": rng.randint(0, 100), "level": rng.randint(1, 9)}
            originals.append(event)

    placed: list[tuple[float, int, Record]] = []
    for pos, event in enumerate(originals):
        placed.append((float(pos), 0, (event["student_id"].encode(), orjson.dumps(event))))

    def later(pos: int) -> float:
        if rng.random() < 0.7:  # soon after: within about a thousand records
            return pos + rng.uniform(0.5, 1000.0)
        return rng.uniform(pos + 0.5, n_orig + 0.5)  # much later, up to the very end

    for _ in range(n_dup):
        pos = rng.randrange(n_orig)
        placed.append((later(pos), 1, placed[pos][2]))
    for _ in range(n_conflict):
        pos = rng.randrange(n_orig)
        twin = dict(originals[pos], delta=abs(originals[pos]["delta"]) + 1, kind="quiz")
        placed.append((later(pos), 1, (twin["student_id"].encode(), orjson.dumps(twin))))

    expected = Expected(records=0, valid_unique=n_orig, duplicates=n_dup, conflicts=n_conflict)
    for i in range(n_invalid):
        reason = INVALID_REASONS[i % len(INVALID_REASONS)]
        base = dict(rng.choice(originals), id=_uuid(rng))
        key: bytes | None = base["student_id"].encode()
        if reason == "bad_json":
            value = orjson.dumps(base)[: rng.randint(1, 40)]
        elif reason == "schema":
            base.pop("kind") if rng.random() < 0.5 else base.update(delta="ten")
            value = orjson.dumps(base)
        elif reason == "negative_delta":
            value = orjson.dumps(dict(base, kind="quiz", delta=-rng.randint(1, 50)))
        elif reason == "key_mismatch":
            key = rng.choice(students).encode()
            if key == base["student_id"].encode():
                key = b"not-a-student"
            value = orjson.dumps(base)
        else:  # oversized
            value = orjson.dumps(dict(base, metadata={"blob": "x" * (spec.max_record_bytes + 1)}))
        expected.invalid[reason] = expected.invalid.get(reason, 0) + 1
        placed.append((rng.uniform(0, n_orig), 2, (key, value)))

    placed.sort(key=lambda p: (p[0], p[1]))
    records = [p[2] for p in placed]
    expected.records = len(records)

    latest: dict[str, tuple[str, datetime]] = {}
    for event in originals:  # originals are in publish order; duplicates never win
        sid = event["student_id"]
        row = expected.students.setdefault(sid, [0, 0, None])
        row[0] += event["delta"]
        if event["kind"] not in NON_GAME_KINDS:
            row[1] += 1
            at = datetime.fromisoformat(event["created_at"])
            if sid not in latest or at >= latest[sid][1]:
                latest[sid] = (event["kind"], at)
                row[2] = event["kind"]
    return records, expected


def batch_records(records: list[Record], size: int, max_bytes: int) -> list[Record]:
    """Pack ``records`` into batched records (``xp_event_batch.v1.json``) of up to ``size``
    events of one student, as a client outbox sends them.

    Each student's events keep their order; a batch is placed where its first event was. A
    record that is not a valid single event stays alone (a batch is all or nothing, so one bad
    event would send its neighbours to the DLQ too): the expected outcome of the workload is
    unchanged. A batch is closed early when it would exceed ``max_bytes``.
    """
    from streams.errors import InvalidEvent
    from streams.events import decode_xp

    out: list[Record | list[bytes]] = []
    open_batch: dict[bytes, tuple[int, int]] = {}  # key -> (index in out, bytes so far)
    for key, value in records:
        try:
            decode_xp(key, value, max_bytes)
        except InvalidEvent:
            out.append((key, value))
            continue
        assert key is not None
        slot = open_batch.get(key)
        if slot is not None:
            items = out[slot[0]]
            assert isinstance(items, list)
            if len(items) < size and slot[1] + len(value) + 1 < max_bytes:
                items.append(value)
                open_batch[key] = (slot[0], slot[1] + len(value) + 1)
                continue
        open_batch[key] = (len(out), len(value) + 2)
        out.append([key, value])
    result: list[Record] = []
    for item in out:
        if isinstance(item, list):
            key, *values = item
            result.append((key, b"[" + b",".join(values) + b"]"))
        else:
            result.append(item)
    return result


@dataclass
class ActionExpected:
    """The expected outcome of an action workload, by the fold's rules computed independently
    (counts and minimums over distinct event ids)."""

    ids: set[str] = field(default_factory=set)
    """Event ids the action ledger must hold, each once."""
    progress: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    """(profile, vector) -> [step_index, draft_skipped_at (aware datetime or None)]."""
    invalid: int = 0
    """Records that must go to the action DLQ."""


def generate_actions(events: int, profiles: int, seed: int) -> tuple[list[Record],
                                                                      ActionExpected]:
    """``events`` action events of ``profiles`` learners in the five vectors, published out of
    time order, with 10% duplicates, 5 conflicting re-sends (same id, other content: ignored)
    and 3% invalid records (bad JSON, schema, key not the profile); and their outcome."""
    from streams.actions.fold import DRAFT_SKIP
    from streams.audit.verify import VECTORS

    rng = random.Random(seed)  # noqa: S311 - a reproducible workload
    now = datetime.now(UTC).replace(microsecond=0)
    owners = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(profiles)]
    expected = ActionExpected()
    records: list[Record] = []
    for _ in range(events):
        profile, vector = rng.choice(owners), rng.choice(VECTORS)
        at = now - timedelta(minutes=rng.randint(0, 5000))  # arrival order is not time order
        kind = rng.random()
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        doc = {"id": event_id,
               "action_id": DRAFT_SKIP if kind < 0.1 else f"apply_{vector}",
               "profile_id": profile, "source": "dashboard", "vector": vector,
               "selected_at": at.isoformat(),
               "completed_at": (at + timedelta(minutes=3)).isoformat() if kind > 0.4 else None,
               "duration": rng.choice([None, 12.6, 300]), "mode": "self_guided"}
        records.append((profile.encode(), orjson.dumps(doc)))
        expected.ids.add(event_id)
        state = expected.progress.setdefault((profile, vector), [0, None])
        if doc["action_id"] == DRAFT_SKIP:
            state[1] = at if state[1] is None else min(state[1], at)
        elif doc["completed_at"] is not None:
            state[0] += 1
    originals = list(records)
    records += rng.sample(originals, events // 10)  # duplicates, later
    for key, value in rng.sample(originals, min(5, events)):  # conflicts
        assert key is not None and value is not None
        records.append((key, orjson.dumps({**orjson.loads(value), "source": "feed"})))
    for i in range(events * 3 // 100):
        key = rng.choice(owners).encode()
        records.insert(rng.randrange(len(records)), (key, [
            b"{not json", orjson.dumps({"id": "x", "profile_id": key.decode()}),
            orjson.dumps({"id": str(uuid.uuid4()), "action_id": "a", "profile_id":
                          str(uuid.uuid4()), "source": "s", "vector": "mind",
                          "selected_at": now.isoformat()})][i % 3]))
        expected.invalid += 1
    return records, expected


async def publish_records(settings: Settings, records: list[Record], topic: str | None = None,
                          progress: Callable[[int], None] | None = None) -> float:
    """Publish ``records`` in order to ``topic`` (default the XP topic) and wait for every ack.

    Returns:
        Seconds from the first send to the last acknowledgement.

    Raises:
        PublishError: a record was not acknowledged.
    """
    from streams.publish import Publisher

    started = time.monotonic()
    async with Publisher(settings, topic) as pub:
        await pub.send_records(records, progress)
    return time.monotonic() - started


CLAIM_ZONES = ("America/New_York", "Europe/Stockholm", "Pacific/Kiritimati", "Asia/Kathmandu",
               "Australia/Lord_Howe", "America/St_Johns", "UTC")
"""Zones of the claim workload: unusual offsets, DST in both hemispheres."""

CLAIM_POLICY: dict[str, Any] = {
    "kind": "policy", "policy_id": "daily_login", "version": 1, "effective_day": "2000-01-01",
    "definition": {
        "base_xp": 10,
        "streak_curve": {"type": "table", "steps": [{"from_day": 1, "pct": 100},
                                                    {"from_day": 3, "pct": 120},
                                                    {"from_day": 7, "pct": 150}]},
        "milestones": [{"streak_day": 7, "bonus_xp": 50}, {"streak_day": 30, "bonus_xp": 200}],
        "caps": {"max_award_xp": 100}}}
"""The policy the claim workload is decided under (published long before its first day)."""

CLAIM_POLICY_PUBLISHED_MS = int(datetime(1999, 12, 1, tzinfo=UTC).timestamp() * 1000)

CLAIM_SEASON_DAYS = 14
"""The current season of the claim workload's calendar began this many days before its last
day (midnight UTC); the one before covers every earlier day."""


def claim_calendar(last_day: date | None = None) -> dict[str, Any]:
    """The season calendar of a claim workload ending ``last_day`` (default: yesterday, UTC):
    season ``past`` up to :data:`CLAIM_SEASON_DAYS` days before it, then season ``current``
    for a year, so the claims span a rollover. Published (like :data:`CLAIM_POLICY`) with
    the timestamp :data:`CLAIM_POLICY_PUBLISHED_MS`, and before any XP record or claim."""
    end = last_day or (datetime.now(UTC).date() - timedelta(days=1))
    split = datetime.combine(end - timedelta(days=CLAIM_SEASON_DAYS), datetime.min.time(), UTC)
    return {"kind": "season_calendar", "policy_id": "seasons", "version": 1, "seasons": [
        {"season_id": "past", "starts_at": "2000-01-01T00:00:00Z",
         "ends_at": split.isoformat().replace("+00:00", "Z")},
        {"season_id": "current", "starts_at": split.isoformat().replace("+00:00", "Z"),
         "ends_at": (split + timedelta(days=365)).isoformat().replace("+00:00", "Z")}]}

TimedRecord = tuple[bytes, bytes, int]
"""(key, value, timestamp in milliseconds) of a record whose timestamp matters."""


@dataclass
class ClaimExpected:
    """The expected outcome of a claim workload, computed without the grant rule's code: one
    award per local date claimed, streaks and tokens by the rules for a fixed zone."""

    claims: int = 0
    awards: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    """student -> [(reward day, XP)] in day order."""
    streaks: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    """student -> (current streak, longest streak, grace tokens) after the last award."""
    seasonal: dict[str, tuple[str, int]] = field(default_factory=dict)
    """student -> (newest season of an award, the XP of its awards) under
    :func:`claim_calendar`: an award's season is the one holding its claim's instant."""

    @property
    def award_count(self) -> int:
        """Awards (= ledger rows of kind daily_login)."""
        return sum(len(a) for a in self.awards.values())


def _expected_xp(streak_day: int) -> int:
    """XP of :data:`CLAIM_POLICY` at ``streak_day``: 10 XP x 100/120/150% + milestones, cap."""
    pct = 150 if streak_day >= 7 else 120 if streak_day >= 3 else 100
    bonus = {7: 50, 30: 200}.get(streak_day, 0)
    return min(100, 10 * pct // 100 + bonus)


def generate_claims(students: int, days: int, seed: int,
                    last_day: date | None = None) -> tuple[list[TimedRecord], ClaimExpected]:
    """Daily-login claims of ``students`` learners over the ``days`` days ending ``last_day``
    (default: yesterday, UTC), each learner in one zone of :data:`CLAIM_ZONES`: on 80% of the
    days 1 to 3 claims (several producers) at random local times, DST changes included.
    Records are in time order per learner; their timestamps are the claims' instants."""
    from zoneinfo import ZoneInfo

    rng = random.Random(f"claims-{seed}")  # noqa: S311 - reproducible, not the XP workload's ids
    end = last_day or (datetime.now(UTC).date() - timedelta(days=1))
    first = end - timedelta(days=days - 1)
    calendar = Calendar.from_record(claim_calendar(end))
    order = {s.season_id: i for i, s in enumerate(calendar.seasons)}
    expected = ClaimExpected()
    records: list[TimedRecord] = []
    for _ in range(students):
        student = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        zone = rng.choice(CLAIM_ZONES)
        instants: list[datetime] = []
        for n in range(days):
            if rng.random() >= 0.8:
                continue
            day = first + timedelta(days=n)
            for _ in range(rng.randint(1, 3)):
                local = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)) + \
                    timedelta(seconds=rng.randint(0, 86_399))
                instants.append(local.astimezone(UTC))
        instants.sort()
        first_at: dict[date, datetime] = {}
        for i in instants:  # in time order: the first claim of a local date is awarded
            first_at.setdefault(i.astimezone(ZoneInfo(zone)).date(), i)
        dates = sorted(first_at)
        for at in instants:
            claim = {"type": "daily_login_claim", "id": str(uuid.UUID(int=rng.getrandbits(128),
                                                                       version=4)),
                     "student_id": student, "client_tz": zone, "source": "loadgen"}
            records.append((student.encode(), orjson.dumps(claim),
                            int(at.timestamp() * 1000)))
        c = longest = k = 0
        last: date | None = None
        awards = []
        for d in dates:
            before = c
            if last is None:
                c, k = 1, 1
            else:
                gap = (d - last).days - 1
                if gap == 0:
                    c += 1
                elif gap <= k:
                    k, c = k - gap, c + 1
                else:
                    c = 1
            if c // 7 > before // 7 and c > before:
                k = min(k + 1, 2)
            longest = max(longest, c)
            awards.append((d.isoformat(), _expected_xp(c)))
            last = d
        if awards:
            expected.awards[student] = awards
            expected.streaks[student] = (c, longest, k)
            by_season: dict[str, int] = {}
            for d, (_, xp) in zip(dates, awards, strict=True):
                season = calendar.season_of(first_at[d])
                if season is not None:
                    by_season[season] = by_season.get(season, 0) + xp
            newest = max(by_season, key=order.__getitem__, default=None)
            if newest is not None:
                expected.seasonal[student] = (newest, by_season[newest])
        expected.claims += len(instants)
    return records, expected


async def publish_timed(settings: Settings, topic: str, records: list[TimedRecord]) -> None:
    """Publish ``records`` in order with their own timestamps and wait for every ack.

    Raises:
        KafkaError: the brokers cannot be reached or did not acknowledge.
    """
    from streams import kafka

    producer = kafka.producer(settings)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, timestamp_ms=ts)
                   for key, value, ts in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
