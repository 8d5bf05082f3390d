"""The grant stream on the real stack (docs/design.md, "Grants"): claims through the worker to
awards in the ledger and the totals, outcomes on their topic, bad claims in the DLQ."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

from streams import kafka, lag
from streams.db.queries import query
from streams.dev.procs import free_port
from streams.dev.stack import PipelineProcess
from streams.settings import Settings

from .conftest import Pipeline, metric, query_one, streams, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POLICY = {"kind": "policy", "policy_id": "daily_login", "version": 1,
          "effective_day": "2026-01-01",
          "definition": {"base_xp": 10, "streak_curve": {"type": "table", "steps": [
              {"from_day": 1, "pct": 100}, {"from_day": 3, "pct": 120}]}}}
PUBLISHED = int(datetime(2025, 12, 1, tzinfo=UTC).timestamp() * 1000)


async def _send(s: Settings, topic: str, records: list[tuple[bytes, dict[str, Any], int | None]],
                producers: int = 1) -> None:
    """Send (key, value, timestamp ms) records, spread over ``producers`` producers."""
    clients = [kafka.producer(s) for _ in range(producers)]
    for c in clients:
        await c.start()
    try:
        futures = [await clients[i % producers].send(topic, orjson.dumps(v), key=k,
                                                     timestamp_ms=ts)
                   for i, (k, v, ts) in enumerate(records)]
        await asyncio.gather(*futures)
    finally:
        for c in clients:
            await c.stop()


async def _read_all(s: Settings, topic: str, expected: int, timeout_s: float = 60
                    ) -> list[dict[str, Any]]:
    consumer = kafka.consumer(s, None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(s.topic_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += [orjson.loads(r.value) for r in records if r.value]
        return out
    finally:
        await consumer.stop()


def _claim(student: str, zone: str = "Europe/Stockholm", **extra: Any) -> dict[str, Any]:
    return {"type": "daily_login_claim", "id": str(uuid.uuid4()), "student_id": student,
            "client_tz": zone, **extra}


def test_claims_become_one_award_per_day_in_ledger_and_totals(
        settings: Settings, tmp_path: Any) -> None:
    """I1 and I2: a claim flows to the ledger and the totals; 100 claims of one student and day
    from 5 producers give one award, 99 already_claimed; an unknown zone goes to the DLQ."""
    s = settings
    pipeline = Pipeline(s, tmp_path, grants=True)
    try:
        asyncio.run(_send(s, s.policies_topic, [(b"daily_login:1", POLICY, PUBLISHED)]))
        pipeline.start()
        alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
        storm = [(alice.encode(), _claim(alice), None) for _ in range(100)]
        asyncio.run(_send(s, s.claims_topic, [*storm, (bob.encode(), _claim(bob), None),
                                              (bob.encode(), _claim(bob, "Mars/Olympus"), None)],
                          producers=5))
        outcomes = asyncio.run(_read_all(s, s.outcomes_topic, 101))
        assert len(outcomes) == 101
        by_student = Counter((o["student_id"], o["outcome"]) for o in outcomes)
        assert by_student == {(alice, "awarded"): 1, (alice, "already_claimed"): 99,
                              (bob, "awarded"): 1}
        receipts = {o["receipt_id"] for o in outcomes if o["student_id"] == alice}
        assert len(receipts) == 1
        wait_for(lambda: query_one(s.database_url, "SELECT count(*) FROM xp_totals "
                                   "WHERE student_id = ANY(%s::uuid[]) AND total_xp = 10",
                                   [alice, bob])[0] == 2, 90, "both awards in the totals")
        rows = query_one(s.database_url, "SELECT count(*), sum(delta) FROM xp_events "
                         "WHERE kind = 'daily_login'")
        assert rows == (2, 20)
        dlq = asyncio.run(_read_all(s, s.claims_dlq_topic, 1))
        assert [d["client_tz"] for d in dlq] == ["Mars/Olympus"]
        # the award sink and the grant writer: outcomes, awards, streaks, zones
        wait_for(lambda: query_one(s.database_url, "SELECT count(*) FROM xp_claim_outcomes")[0]
                 == 101, 60, "every outcome in xp_claim_outcomes")
        awards = query_one(s.database_url, "SELECT count(*), sum(xp_awarded), "
                           "count(DISTINCT user_id) FROM xp_awards")
        assert awards == (2, 20, 2)
        assert query_one(s.database_url, query("awards_vs_ledger")) == (0,)
        wait_for(lambda: query_one(s.database_url, "SELECT count(*) FROM xp_streaks WHERE "
                                   "current_streak = 1 AND longest_streak = 1 AND "
                                   "grace_tokens = 1")[0] == 2, 60, "both streaks")
        assert query_one(s.database_url, "SELECT reward_tz FROM xp_users WHERE user_id = %s",
                         alice) == ("Europe/Stockholm",)
        pipeline.wait_caught_up()
        done = streams(["reconcile", "--json"], s)
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
        assert orjson.loads(done.stdout)["awards_unmatched"] == 0
        with psycopg.connect(s.database_url, autocommit=True) as conn:  # a lost ledger row
            conn.execute("DELETE FROM xp_events WHERE student_id = %s", (alice,))
        lost = streams(["reconcile", "--json"], s)
        assert lost.returncode == 1 and orjson.loads(lost.stdout)["awards_unmatched"] == 1
    finally:
        pipeline.stop()


def test_policy_cli_refuses_in_one_line_and_publishes_a_version(
        settings: Settings, tmp_path: Any) -> None:
    """I6: an invalid file, a version published too late, an edit of a published version: one
    line each, exit 1; a valid version is published and listed; ``streams claim`` publishes."""
    s = settings
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps({**POLICY, "definition": {"base_xp": 10}}))
    late = tmp_path / "late.json"
    late.write_bytes(orjson.dumps(POLICY))
    good = tmp_path / "good.json"
    good.write_bytes(orjson.dumps({**POLICY, "version": 2, "effective_day": "2099-01-01"}))
    edited = tmp_path / "edited.json"
    edited.write_bytes(orjson.dumps({**POLICY, "version": 2, "effective_day": "2099-01-02"}))
    for path, expected in ((bad, "refused: schema"), (late, "refused: policy_too_late")):
        result = streams(["policy", "publish", str(path)], s)
        err = result.stderr.decode().strip()
        assert result.returncode == 1 and expected in err and len(err.splitlines()) == 1, err
    published = streams(["policy", "publish", str(good)], s)
    assert published.returncode == 0, published.stderr.decode()
    again = streams(["policy", "publish", str(edited)], s)
    assert again.returncode == 1 and "is published" in again.stderr.decode()
    listed = streams(["policy", "list"], s)
    assert listed.returncode == 0 and "2099-01-01" in listed.stdout.decode()
    student = str(uuid.uuid4())
    sent = streams(["claim", student, "--tz", "Europe/Stockholm"], s)
    assert sent.returncode == 0, sent.stderr.decode()
    (claim,) = asyncio.run(_read_all(s, s.claims_topic, 1))
    assert claim["id"] == sent.stdout.decode().strip() and claim["student_id"] == student
    unknown = streams(["claim", student, "--tz", "Mars/Olympus"], s)
    assert unknown.returncode == 1 and "unknown_time_zone" in unknown.stderr.decode()


def test_replay_of_the_claims_topic_reproduces_outcomes_and_awards(
        settings: Settings, tmp_path: Any) -> None:
    """Replay from offset 0 reproduces ``xp_claim_outcomes`` byte for byte and ``xp_awards``;
    an award changed in PostgreSQL is reported (exit 1)."""
    s = settings
    pipeline = Pipeline(s, tmp_path, grants=True)
    try:
        asyncio.run(_send(s, s.policies_topic, [(b"daily_login:1", POLICY, PUBLISHED)]))
        pipeline.start()
        students = [str(uuid.uuid4()) for _ in range(5)]
        records = []
        for day in range(1, 9):  # days 1-8 of June 2026, a gap on day 5, several zones
            at = int(datetime(2026, 6, day, 9, tzinfo=UTC).timestamp() * 1000)
            for n, student in enumerate(students):
                if day == 5 and n % 2:
                    continue
                zone = ("Europe/Stockholm", "America/New_York", "Pacific/Kiritimati")[n % 3]
                records += [(student.encode(), _claim(student, zone), at + i) for i in range(2)]
            if day == 3:
                records.append((students[0].encode(),
                                {"type": "reward_tz_change", "id": str(uuid.uuid4()),
                                 "student_id": students[0], "reward_tz": "Asia/Kathmandu",
                                 "requested_by": "learner"}, at + 5))
        asyncio.run(_send(s, s.claims_topic, records))
        wait_for(lambda: query_one(s.database_url, "SELECT count(*) FROM xp_claim_outcomes")[0]
                 == len(records), 90, "every outcome in PostgreSQL")
        done = streams(["replay-grants", "--json"], s)
        report = orjson.loads(done.stdout)
        assert done.returncode == 0 and report["identical"], done.stdout.decode()
        assert report["outcomes"] == len(records) and report["awards"] == 5 * 8 - 2
        assert metric(s.metrics_port, 'xp_grant_tz_changes_total{outcome="accepted"}') == 1
        with psycopg.connect(s.database_url, autocommit=True) as conn:
            conn.execute("UPDATE xp_awards SET xp_awarded = xp_awarded + 1 WHERE user_id = %s "
                         "AND reward_day_id = '2026-06-02'", (students[1],))
        changed = streams(["replay-grants", "--json"], s)
        assert changed.returncode == 1
        assert len(orjson.loads(changed.stdout)["awards_differing"]) == 1
    finally:
        pipeline.stop()


def test_seasonal_xp_follows_the_calendar_and_matches_the_ledger(
        settings: Settings, tmp_path: Any) -> None:
    """Seasons (docs/design.md, "Grants: seasons"): the rules sink writes the policy and the
    calendar; each event's season is that of min(created_at, record timestamp); a newer
    season rolls seasonal XP over, an older one adds only to the lifetime total; reconcile
    compares seasonal XP with the ledger, and rebuild-totals mends a corrupted value."""
    s = settings
    split = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=10)

    def z(at: datetime) -> str:
        return at.isoformat().replace("+00:00", "Z")

    calendar = {"kind": "season_calendar", "policy_id": "seasons", "version": 1, "seasons": [
        {"season_id": "S1", "starts_at": z(split - timedelta(days=20)), "ends_at": z(split)},
        {"season_id": "S2", "starts_at": z(split), "ends_at": z(split + timedelta(days=300))}]}
    a, b, c, d = (str(uuid.uuid4()) for _ in range(4))

    def event(student: str, delta: int, at: datetime) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "student_id": student, "kind": "quiz", "delta": delta,
                "created_at": z(at)}

    def ms(at: datetime) -> int:
        return int(at.timestamp() * 1000)

    now = datetime.now(UTC)
    xp = [(a.encode(), event(a, 5, now - timedelta(days=1)), None),        # S2
          (a.encode(), event(a, 7, split - timedelta(days=5)), None),      # late S1: lifetime
          (a.encode(), event(a, 3, now - timedelta(hours=1)), None),       # S2
          (b.encode(), event(b, 4, split - timedelta(days=5)), None),      # S1
          (b.encode(), event(b, 6, now - timedelta(hours=2)), None),       # S2: rollover
          # created in S2, but its record is stamped in S1: the earlier time decides
          (c.encode(), event(c, 9, split + timedelta(hours=1)), ms(split - timedelta(hours=1))),
          (c.encode(), event(c, 2, split - timedelta(days=2)), None)]      # S1
    pipeline = Pipeline(s, tmp_path, grants=True)
    try:
        asyncio.run(_send(s, s.policies_topic, [(b"daily_login:1", POLICY, PUBLISHED),
                                                (b"seasons:1", calendar, PUBLISHED)]))
        pipeline.start()
        asyncio.run(_send(s, s.xp_topic, xp))
        asyncio.run(_send(s, s.claims_topic, [(d.encode(), _claim(d), None)]))
        want = {a: (15, "S2", 8), b: (10, "S2", 6), c: (11, "S1", 11), d: (10, "S2", 10)}

        def totals() -> dict[str, tuple[int, str, int]]:
            with psycopg.connect(s.database_url) as conn:
                return {str(r[0]): tuple(r[1:]) for r in conn.execute(  # type: ignore[misc]
                    "SELECT student_id, total_xp, season_id, seasonal_xp FROM xp_totals")}
        wait_for(lambda: totals() == want, 90, f"seasonal totals {want}")
        pipeline.wait_caught_up()
        wait_for(lambda: query_one(s.database_url, "SELECT count(*) FROM xp_seasons_current")
                 == (2,), 60, "the calendar in xp_seasons")
        assert query_one(s.database_url, "SELECT policy_id, version, effective_day::text "
                         "FROM xp_rules") == ("daily_login", 1, "2026-01-01")
        assert query_one(s.database_url, "SELECT season_id FROM xp_ledger WHERE "
                         "student_id = %s AND delta = 9", c) == ("S1",)
        balances = {str(r[0]): r[1:] for r in psycopg.connect(s.database_url).execute(
            "SELECT student_id, lifetime_xp, seasonal_xp, current_season_id FROM xp_balance")}
        assert balances[a] == (15, 8, "S2") and balances[c] == (11, 0, "S2")
        done = streams(["reconcile", "--json"], s)
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
        assert orjson.loads(done.stdout)["seasons_unmatched"] == 0
        with psycopg.connect(s.database_url, autocommit=True) as conn:
            conn.execute("UPDATE xp_totals SET seasonal_xp = 99 WHERE student_id = %s", (b,))
        broken = streams(["reconcile", "--json", "--wait", "5"], s)
        assert broken.returncode == 1 and orjson.loads(broken.stdout)["seasons_unmatched"] == 1
        mended = streams(["rebuild-totals", "--student", b], s)
        assert mended.returncode == 0, mended.stderr.decode()
        assert totals() == want
    finally:
        pipeline.stop()


def test_two_deciders_of_the_same_claims_emit_identical_ids_and_no_conflict(
        settings: Settings, tmp_path: Any) -> None:
    """I4: a second fold worker in another consumer group (a zombie's view: it decides every
    claim again) emits the same receipts and outcome ids with the same content, so the first
    worker's dedupe sees duplicates, never a conflict, and PostgreSQL holds each award and
    outcome once."""
    s = settings
    pipeline = Pipeline(s, tmp_path, grants=True)
    twin = PipelineProcess("worker", s.with_(worker_group=f"{s.worker_group}-twin",
                                             data_dir=str(tmp_path / "twin")),
                           tmp_path / "twin.log", free_port())
    try:
        asyncio.run(_send(s, s.policies_topic, [(b"daily_login:1", POLICY, PUBLISHED)]))
        pipeline.start()
        twin.start()
        students = [str(uuid.uuid4()) for _ in range(20)]
        claims = []
        for day in range(1, 4):
            at = int(datetime(2026, 6, day, 12, tzinfo=UTC).timestamp() * 1000)
            claims += [(sid.encode(), _claim(sid, "America/New_York"), at + i)
                       for i, sid in enumerate(students) for _ in range(2)]
        asyncio.run(_send(s, s.claims_topic, claims))
        awards = len(students) * 3
        outcomes = asyncio.run(_read_all(s, s.outcomes_topic, 2 * len(claims)))
        assert len(outcomes) == 2 * len(claims)  # each claim decided by both
        by_id: dict[str, set[bytes]] = {}
        for o in outcomes:
            by_id.setdefault(o["id"], set()).add(
                orjson.dumps(o, option=orjson.OPT_SORT_KEYS))
        assert len(by_id) == len(claims) and all(len(v) == 1 for v in by_id.values())
        wait_for(lambda: metric(s.metrics_port, 'xp_records_total{outcome="duplicate",'
                                                'stage="worker"}') >= awards, 90,
                 "the first worker to see every award twice")
        assert metric(s.metrics_port, 'xp_records_total{outcome="conflict",stage="worker"}') == 0
        pipeline.wait_caught_up()
        wait_for(lambda: query_one(s.database_url, "SELECT count(*) FROM xp_claim_outcomes")
                 == (len(claims),), 60, "each outcome once in xp_claim_outcomes")
        assert query_one(s.database_url, "SELECT count(*), count(DISTINCT award_id) FROM "
                         "xp_awards") == (awards, awards)
        assert query_one(s.database_url, "SELECT count(*) FROM xp_events WHERE kind = "
                         "'daily_login'") == (awards,)
        assert query_one(s.database_url, "SELECT count(*) FROM xp_totals WHERE total_xp = 32") \
            == (len(students),)  # 10 + 10 + 12 XP: streak days 1-3
        assert metric(s.metrics_port, "xp_grant_conflicts_total") == 0
        # A decider that disagrees: an award with a known receipt and another amount.
        award = next(a for a in asyncio.run(_read_all(s, s.xp_topic, 2 * awards))
                     if a.get("kind") == "daily_login")
        asyncio.run(_send(s, s.xp_topic, [(award["student_id"].encode(),
                                           {**award, "delta": award["delta"] + 5}, None)]))
        wait_for(lambda: metric(s.metrics_port, "xp_grant_conflicts_total") == 1, 60,
                 "the worker to count the conflicting award")
        pipeline.wait_caught_up()
        assert query_one(s.database_url, "SELECT count(*) FROM xp_totals WHERE total_xp = 32") \
            == (len(students),)  # the first award stands
    finally:
        twin.stop()
        pipeline.stop()


@pytest.mark.kafka
def test_the_policy_feed_waits_for_a_broker_that_is_starting(settings: Settings,
                                                             tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A worker's first batch reads the policies topic to its end; a broker restarting at that
    moment (seen in chaos: broker-restart just after a worker's restart) made the feed's
    consumer fail to bootstrap and the worker exit. The feed tries again until its deadline."""
    from streams.dev.kafka_cluster import KafkaCluster
    from streams.policy_feed import PolicyFeed

    broker = KafkaCluster(tmp_path / "broker")
    s = settings.with_(kafka_bootstrap_servers=broker.bootstrap_servers)

    async def catch_up_while_it_starts() -> int:
        feed = PolicyFeed(s, None)
        task = asyncio.ensure_future(feed.catch_up(timeout_s=120))
        await asyncio.sleep(1.0)
        assert not task.done(), task  # no broker yet: the feed waits
        await asyncio.to_thread(broker.start)
        await kafka.ensure_topics(s, [s.policies_topic], partitions=1)
        await asyncio.wait_for(task, 120)
        return len(feed.policies.versions)

    try:
        assert asyncio.run(catch_up_while_it_starts()) == 0
    finally:
        broker.stop()


def test_a_claim_from_a_broken_or_future_clock_is_dead_lettered_and_never_blocks_the_learner(
        settings: Settings, tmp_path: Any) -> None:
    """On a broker that accepts any record time (Kafka 3.x, or
    ``message.timestamp.after.max.ms`` raised), a claim stamped 9999 and one stamped 2031
    reach the worker. Before: the first ended the worker (``OverflowError`` in ``decide``, the
    partition halted) and the second was awarded for 2031, so every real claim of that learner
    was ``already_claimed`` until then. Now both go to the claims DLQ (``timestamp_out_of_range``,
    ``claim_in_future``), the learner's real claim is awarded today, and the replay and the
    changelog audit agree (they skip what the worker refused)."""
    s = settings

    async def any_record_time(admin: AIOKafkaAdminClient) -> None:
        await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, s.claims_topic,
            {"message.timestamp.after.max.ms": str(2**63 - 1)})])
    asyncio.run(kafka.ensure_topics(s, [s.claims_topic], s.topic_partitions))
    asyncio.run(kafka.with_admin(s, any_record_time))
    pipeline = Pipeline(s, tmp_path, grants=True)
    student = str(uuid.uuid4())
    far = int(datetime(9999, 12, 31, 20, tzinfo=UTC).timestamp() * 1000)
    ahead = int(datetime(2031, 6, 1, 12, tzinfo=UTC).timestamp() * 1000)
    try:
        asyncio.run(_send(s, s.policies_topic, [(b"daily_login:1", POLICY, PUBLISHED)]))
        pipeline.start()
        asyncio.run(_send(s, s.claims_topic, [(student.encode(), _claim(student), far),
                                              (student.encode(), _claim(student), ahead),
                                              (student.encode(), _claim(student), None)]))
        outcomes = asyncio.run(_read_all(s, s.outcomes_topic, 1))
        assert [(o["outcome"], o["reward_day_id"][:4]) for o in outcomes] == [
            ("awarded", str(datetime.now(UTC).year))]
        dlq = asyncio.run(_read_dlq_reasons(s, 2))
        assert dlq == ["timestamp_out_of_range", "claim_in_future"]
        assert pipeline.procs["worker"].alive()
        asyncio.run(lag.wait_caught_up(s, [(s.worker_group, s.claims_topic),
                                           (s.award_group, s.outcomes_topic)], 60))
        replay = streams(["replay-grants", "--json"], s)
        assert replay.returncode == 0, replay.stdout.decode() + replay.stderr.decode()
        assert orjson.loads(replay.stdout)["invalid"] == {"timestamp_out_of_range": 1,
                                                          "claim_in_future": 1}
        pipeline.wait_caught_up()
        audit = streams(["audit-changelogs", "--json"], s)
        assert audit.returncode == 0, audit.stdout.decode()[-2000:]
    finally:
        pipeline.stop()


async def _read_dlq_reasons(s: Settings, expected: int, timeout_s: float = 60) -> list[str]:
    """The ``reason`` headers of the claims DLQ's first ``expected`` records, in offset order
    (one student: one partition)."""
    reasons: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(reasons) < expected and time.monotonic() < deadline:
        reasons = [dict(r.headers)["reason"].decode()
                   async for r in kafka.read_to_end(s, s.claims_dlq_topic)]
        if len(reasons) < expected:
            await asyncio.sleep(0.2)
    return reasons


def test_a_claim_id_resent_after_more_than_eight_outcomes_is_not_decided_again(
        settings: Settings, tmp_path: Any) -> None:
    """A learner's claims on ten days, then the first claim resent (same id and content) and
    the second one's id reused with another zone, both on an eleventh day. Before: the state
    remembered the last 8 claim ids only, so the resend was decided again and awarded a second
    time, on day eleven. Now ``claim_dedupe`` remembers every claim id for the dedupe horizon:
    the resend is a duplicate and the reuse a conflict, both dropped; replay and the changelog
    audit agree."""
    s = settings.with_(dedupe_horizon_seconds=30 * 86400.0)
    pipeline = Pipeline(s, tmp_path, grants=True)
    student = str(uuid.uuid4())
    first_day = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - \
        timedelta(days=12)
    claims = [(student.encode(), _claim(student), ms(first_day + timedelta(days=n)))
              for n in range(10)]
    later = first_day + timedelta(days=11)
    resent = (student.encode(), claims[0][1], ms(later))
    reused = (student.encode(), {**claims[1][1], "client_tz": "Asia/Tokyo"},
              ms(later + timedelta(hours=1)))
    try:
        asyncio.run(_send(s, s.policies_topic, [(b"daily_login:1", POLICY, PUBLISHED)]))
        pipeline.start()
        asyncio.run(_send(s, s.claims_topic, [*claims, resent, reused]))
        asyncio.run(lag.wait_caught_up(s, [(s.worker_group, s.claims_topic)], 90))
        outcomes = asyncio.run(_read_all(s, s.outcomes_topic, 12, timeout_s=5))
        assert sorted(o["outcome"] for o in outcomes) == ["awarded"] * 10
        port = pipeline.procs["worker"].metrics_port
        assert metric(port, 'xp_records_total{outcome="duplicate",stage="grant"}') == 1
        assert metric(port, 'xp_records_total{outcome="conflict",stage="grant"}') == 1
        asyncio.run(lag.wait_caught_up(s, [(s.award_group, s.outcomes_topic)], 60))
        replay = streams(["replay-grants", "--json"], s)
        assert replay.returncode == 0, replay.stdout.decode() + replay.stderr.decode()
        pipeline.wait_caught_up()
        audit = streams(["audit-changelogs", "--json"], s)
        assert audit.returncode == 0, audit.stdout.decode()[-2000:]
    finally:
        pipeline.stop()


def ms(at: datetime) -> int:
    """An instant as a record timestamp (milliseconds)."""
    return int(at.timestamp() * 1000)
