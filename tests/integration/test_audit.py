"""Audits on the real pipeline : replay, reconcile, rebuild-totals, backfill, compare."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.records_to_delete import RecordsToDelete
from aiokafka.structs import TopicPartition

from streams import kafka, lag, topics, topology
from streams.actions.fold import decode_progress, encode_progress
from streams.audit.changelogs import recover_changelog
from streams.dedupe import decode_sighting, encode_sighting
from streams.grant.decide import GrantState
from streams.lab.loadgen import (
    CLAIM_POLICY,
    CLAIM_POLICY_PUBLISHED_MS,
    LoadSpec,
    generate,
    generate_actions,
    generate_claims,
    publish_records,
    publish_timed,
)
from streams.settings import Settings
from streams.xp.fold import decode_totals, encode_totals
from tests.integration.conftest import Pipeline, query_one, streams

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def group_offsets(settings: Settings) -> dict[str, object]:
    """Every pipeline group's committed offsets on the broker, and the sinks' stored offsets."""
    s = settings

    async def read() -> dict[str, object]:
        async with kafka.OffsetReader(s) as reader:
            return {
                g: await reader.committed(g, t) for g, t in (
                    (s.worker_group, s.xp_topic), (s.ledger_group, s.xp_topic),
                    (s.totals_group, s.totals_changelog_topic))}
    found = asyncio.run(read())
    with psycopg.connect(s.database_url) as conn:
        found["postgres"] = conn.execute(
            "SELECT consumer_group, topic, partition, next_offset FROM consumer_offsets "
            "ORDER BY 1, 2, 3").fetchall()
    return found


@pytest.fixture
def settled(pipeline: Pipeline) -> Pipeline:
    """A pipeline that has processed a loadgen workload (duplicates, conflicts, invalid)."""
    records, expected = generate(LoadSpec(events=3000, students=40, seed=21,
                                          max_record_bytes=pipeline.settings.max_record_bytes))
    pipeline.start()
    pipeline.publish(records)
    pipeline.wait_caught_up()
    pipeline.assert_exact(expected)
    pipeline.expected = expected  # type: ignore[attr-defined]
    return pipeline


def test_replay_reproduces_the_ledger_and_moves_no_offset(settled: Pipeline,
                                                          tmp_path: Path) -> None:
    s = settled.settings
    expected = settled.expected  # type: ignore[attr-defined]
    before = group_offsets(s)
    events, per_student = tmp_path / "events.jsonl", tmp_path / "totals.csv"
    done = streams(["replay", "--json", "--events-out", str(events),
                    "--totals-out", str(per_student)], s)
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()[-2000:]
    report = orjson.loads(done.stdout)
    assert report["full_coverage"] and report["differences"] == {}
    assert report["accepted"] == expected.valid_unique
    assert report["duplicates"] + report["conflicts"] == expected.duplicates + expected.conflicts
    assert report["invalid"] == expected.invalid
    replayed = [orjson.loads(line) for line in events.read_bytes().splitlines()]
    with psycopg.connect(s.database_url) as conn:
        ledger = {(str(i), d, p, o) for i, d, p, o in conn.execute(
            'SELECT id, delta, "partition", "offset" FROM xp_events')}
    assert {(e["id"], e["delta"], e["partition"], e["offset"]) for e in replayed} == ledger
    assert len(per_student.read_text().splitlines()) == 1 + len(expected.students)
    # one student, from an offset on: still no difference, and only that student's events
    student = next(iter(expected.students))
    done = streams(["replay", "--json", "--student", student.upper(), "--from-offset", "0:5,1:5"],
                   s)
    assert done.returncode == 0, done.stdout.decode()[-2000:]
    report = orjson.loads(done.stdout)
    assert [a["student_id"] for a in report["students"]] == [student]
    assert not report["full_coverage"]
    assert group_offsets(s) == before


def test_replay_of_a_time_window_and_bad_ranges(settled: Pipeline) -> None:
    s = settled.settings
    done = streams(["replay", "--json", "--since", "1h", "--until", "2099-01-01T00:00:00Z"], s)
    assert done.returncode == 0, done.stdout.decode()[-2000:]
    assert orjson.loads(done.stdout)["accepted"] == settled.expected.valid_unique  # type: ignore[attr-defined]
    done = streams(["replay", "--json", "--since", "2099-01-01T00:00:00Z"], s)
    assert done.returncode == 0 and orjson.loads(done.stdout)["records_read"] == 0
    done = streams(["replay", "--since", "yesterday"], s)
    assert done.returncode == 2 and b"neither RFC 3339" in done.stderr
    done = streams(["replay", "--from-offset", "99:0"], s)
    assert done.returncode == 1
    assert done.stderr.decode().strip() == (
        f"Error: topic {s.xp_topic!r} has no partition 99 (it has 4)")


def test_records_deleted_by_retention_are_reported_without_false_differences(
        settled: Pipeline) -> None:
    """Retention for real (Apache Kafka's DeleteRecords moves partition 0's log start): replay
    reports that partition's dropped beginning,
    audits the rest of the range and finds no difference."""
    s = settled.settings

    async def delete_first_records(upto: int) -> dict[TopicPartition, int]:
        admin = AIOKafkaAdminClient(**kafka.client_kwargs(s))
        await admin.start()
        try:
            return await admin.delete_records(
                {TopicPartition(s.xp_topic, 0): RecordsToDelete(upto)}, timeout_ms=10_000)
        finally:
            await admin.close()

    assert asyncio.run(delete_first_records(100)) == {TopicPartition(s.xp_topic, 0): 100}
    done = streams(["replay", "--json"], s)
    assert done.returncode == 0, done.stdout.decode()[-2000:] + done.stderr.decode()
    report = orjson.loads(done.stdout)
    assert not report["full_coverage"] and report["differences"] == {}
    ranges = {r["partition"]: r for r in report["partitions"]}
    assert ranges[0]["dropped"] and ranges[0]["log_start"] == ranges[0]["start"] == 100
    assert not any(r["dropped"] for p, r in ranges.items() if p != 0)
    human = streams(["replay"], s)
    assert b"partition 0: retention dropped the beginning" in human.stdout, human.stdout


def test_a_corrupted_totals_row_is_found_and_fixed(settled: Pipeline) -> None:
    s = settled.settings
    student = next(iter(settled.expected.students))  # type: ignore[attr-defined]
    with psycopg.connect(s.database_url) as conn:
        conn.execute("UPDATE xp_totals SET total_xp = total_xp + 7 WHERE student_id = %s",
                     (student,))
    done = streams(["replay", "--json"], s)
    assert done.returncode == 1
    assert list(orjson.loads(done.stdout)["differences"]) == [student]
    done = streams(["reconcile", "--json", "--wait", "20s"], s)
    assert done.returncode == 1, done.stdout.decode() + done.stderr.decode()
    result = orjson.loads(done.stdout)
    assert [m["student_id"] for m in result["confirmed"]] == [student]
    done = streams(["rebuild-totals", "--json", "--student", student], s)
    assert done.returncode == 0, done.stderr.decode()
    assert orjson.loads(done.stdout)["written"] == 1
    done = streams(["reconcile", "--json"], s)
    assert done.returncode == 0, done.stdout.decode()
    settled.assert_exact(settled.expected)  # type: ignore[attr-defined]


def test_rebuild_totals_while_the_pipeline_runs_counts_nothing_twice(pipeline: Pipeline) -> None:
    """Lost xp_totals rows are rebuilt from the ledger during a workload; the worker's later
    writes and the rebuilt rows agree, and reconcile (lag-aware) confirms no mismatch."""
    s = pipeline.settings
    records, expected = generate(LoadSpec(events=8000, students=60, seed=22,
                                          max_record_bytes=s.max_record_bytes))
    pipeline.start()
    pipeline.publish(records[:3000])
    pipeline.wait_caught_up()
    with psycopg.connect(s.database_url) as conn:
        lost = [r[0] for r in conn.execute(
            "DELETE FROM xp_totals WHERE student_id IN (SELECT student_id FROM xp_totals "
            "ORDER BY student_id LIMIT 30) RETURNING student_id")]
    assert len(lost) == 30
    # Ten lost students get no new event until the rebuild is done (their records are held
    # back, in order), so the rebuild certainly writes theirs; the other twenty race the worker.
    quiet = {str(student).encode() for student in lost[:10]}
    rest = records[3000:]
    publisher = threading.Thread(target=pipeline.publish,
                                 args=([r for r in rest if r[0] not in quiet],))
    publisher.start()
    try:
        done = streams(["rebuild-totals", "--json"], s)
    finally:
        publisher.join(timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    # Every lost row is back once the rebuild is done: written by it, or by the totals writer
    # when a new event of that student came first (then the rebuild leaves it alone).
    assert orjson.loads(done.stdout)["written"] >= 10
    pipeline.publish([r for r in rest if r[0] in quiet])
    assert query_one(s.database_url, "SELECT count(*) FROM xp_totals WHERE student_id = ANY(%s)",
                     lost) == (30,)
    done = streams(["reconcile", "--json", "--wait", "120s"], s)
    assert done.returncode == 0, done.stdout.decode()
    pipeline.wait_caught_up()
    pipeline.assert_exact(expected)



LEGACY = """
CREATE TABLE student_progress (
    student_id uuid NOT NULL, word_set_id uuid, homework_id uuid,
    total_points integer, games_played integer, last_game_type text, last_played_at timestamptz
)"""


def legacy_table(url: str, students: int) -> dict[str, tuple[int, int, str | None]]:
    """The legacy student_progress table: one overall row per student (plus per-word-set rows that
    the backfill must ignore); returns student -> (points, games, last game type)."""
    rows = {}
    with psycopg.connect(url) as conn:
        conn.execute(LEGACY)
        for i in range(students):
            sid = str(uuid.UUID(int=0xB0 << 120 | i, version=4))
            points, games, kind = 100 * i + 7, i, "quiz" if i % 2 else None
            played = None if i == 0 else datetime(2026, 1, 1 + i, tzinfo=UTC)
            conn.execute("INSERT INTO student_progress VALUES (%s, NULL, NULL, %s, %s, %s, %s)",
                         (sid, points, games, kind, played))
            conn.execute("INSERT INTO student_progress VALUES (%s, %s, NULL, 5, 1, 'typing', "
                         "now())", (sid, str(uuid.uuid4())))
            rows[sid] = (points, games, kind)
    return rows


def totals(url: str) -> dict[str, tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return {str(r[0]): tuple(r[1:]) for r in conn.execute(
            "SELECT student_id, total_xp, games_played, last_game_type, version FROM xp_totals")}


def test_backfill_dry_run_user_twice_and_reset(pipeline: Pipeline) -> None:
    s = pipeline.settings
    legacy = legacy_table(s.database_url, 12)
    first, *others = legacy
    pipeline.start()

    done = streams(["backfill", "--dry-run"], s)
    assert done.returncode == 0, done.stderr.decode()
    assert "would publish 12 backfill and 0 reversal events" in done.stdout.decode()
    assert sum(asyncio.run(kafka.high_watermarks(s, s.xp_topic)).values()) == 0  # wrote nothing

    done = streams(["backfill", "--user", first], s)
    assert done.returncode == 0, done.stderr.decode()
    pipeline.wait_caught_up()
    assert totals(s.database_url) == {first: (7, 0, None, 1)}

    for _ in range(2):  # all students, twice: the same as once
        done = streams(["backfill"], s)
        assert done.returncode == 0, done.stderr.decode()
        pipeline.wait_caught_up()
        assert totals(s.database_url) == {sid: (p, g, k, 1) for sid, (p, g, k) in legacy.items()}
    assert query_one(s.database_url, "SELECT count(*) FROM xp_events") == (12,)
    assert streams(["compare-xp"], s).returncode == 0

    with psycopg.connect(s.database_url) as conn:
        conn.execute("UPDATE student_progress SET total_points = 9999, games_played = 50 "
                     "WHERE student_id = %s AND word_set_id IS NULL", (others[0],))
    done = streams(["compare-xp", "--json"], s)
    assert done.returncode == 1
    assert orjson.loads(done.stdout)["differing"] == [
        {"student_id": others[0], "legacy_xp": 9999, "ledger_xp": 107, "delta": 107 - 9999}]

    done = streams(["backfill", "--reset"], s)  # no terminal, no --yes: refuses
    assert done.returncode == 1 and b"Aborted" in done.stderr
    done = streams(["backfill", "--reset", "--yes"], s)
    assert done.returncode == 0, done.stderr.decode()
    assert "generation 2" in done.stdout.decode()
    assert "published 12 backfill and 12 reversal events" in done.stdout.decode()
    pipeline.wait_caught_up()
    legacy[others[0]] = (9999, 50, legacy[others[0]][2])
    assert {k: v[:3] for k, v in totals(s.database_url).items()} == legacy
    assert streams(["compare-xp"], s).returncode == 0
    assert streams(["reconcile"], s).returncode == 0
    # the ledger kept every event: 12 backfills, 12 reversals, 12 new backfills
    assert query_one(s.database_url, "SELECT count(*) FROM xp_events") == (36,)


def test_backfill_rejects_bad_legacy_rows_and_a_missing_table(settings: Settings) -> None:
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(LEGACY)
        conn.execute("INSERT INTO student_progress VALUES (%s, NULL, NULL, -5, 1, NULL, NULL)",
                     (str(uuid.uuid4()),))
    done = streams(["backfill", "--dry-run"], settings)
    assert done.returncode == 1 and "total_points -5 outside" in done.stdout.decode()
    done = streams(["backfill", "--dry-run", "--table", "nope"], settings)
    assert done.returncode == 1
    assert done.stderr.decode().strip() == (
        'Error: legacy source nope: relation "nope" does not exist')


def test_the_changelog_audit_checks_every_table_of_the_worker(settings: Settings,
                                                              tmp_path: Path) -> None:
    """``streams audit-changelogs`` after XP events, action events and claims: every table of
    the worker recovered and clean. Then one stale value planted in each changelog (what an
    unfenced zombie's write would leave) is found, table by table, and nothing else is."""
    s = settings
    xp, expected = generate(LoadSpec(events=1500, students=30, seed=71,
                                     max_record_bytes=s.max_record_bytes))
    actions, _ = generate_actions(400, profiles=12, seed=72)
    claims, claim_expected = generate_claims(12, 8, seed=73)
    pipeline = Pipeline(s, tmp_path, actions=True, grants=True)
    try:
        asyncio.run(publish_timed(s, s.policies_topic, [
            (b"daily_login:1", orjson.dumps(CLAIM_POLICY), CLAIM_POLICY_PUBLISHED_MS)]))
        pipeline.start()
        pipeline.publish(xp)
        asyncio.run(publish_records(s, actions, topic=s.action_topic))
        asyncio.run(publish_timed(s, s.claims_topic, claims))
        sources = (s.xp_topic, s.action_topic, s.claims_topic)
        asyncio.run(lag.wait_caught_up(s, [(s.worker_group, t) for t in sources], 180))
        asyncio.run(lag.wait_caught_up(  # the sinks, after the worker wrote the awards
            s, [(g, t) for g, t in topology.group_topics(s) if g != s.worker_group], 180))
    finally:
        pipeline.stop()
    clean = streams(["audit-changelogs", "--json"], s)
    found = orjson.loads(clean.stdout)
    assert clean.returncode == 0 and found["ok"], found["differences"][:5]
    assert all(found["keys"][t] > 0 for t in topics.WORKER_TABLES), found["keys"]
    assert found["ledger_rows"]["xp_events"] == \
        expected.valid_unique + claim_expected.award_count  # the awards are XP events too

    # One stale value per table, in the partition of the key it replaces.
    async def recovered(table: str) -> dict[tuple[int, bytes], bytes]:
        values, _ = await recover_changelog(s, topics.changelog_topic(s.worker_group, table))
        return values

    def first(table: str) -> tuple[int, bytes, bytes]:
        (p, key), value = sorted(asyncio.run(recovered(table)).items())[0]
        return p, key, value

    planted: list[tuple[str, int, bytes, bytes | None]] = []
    p, key, value = first(topics.TOTALS_TABLE)
    planted.append((topics.TOTALS_TABLE, p, key,
                    encode_totals(decode_totals(value)._replace(total_xp=1))))
    p, key, value = first(topics.DEDUPE_TABLE)
    planted.append((topics.DEDUPE_TABLE, p, key, encode_sighting(
        decode_sighting(value)._replace(offset=decode_sighting(value).offset + 1))))
    p, key, _ = first(topics.ACTION_DEDUPE_TABLE)
    planted.append((topics.ACTION_DEDUPE_TABLE, p, key, None))  # a lost sighting
    p, key, value = first(topics.PROGRESS_TABLE)
    progress = decode_progress(value)
    planted.append((topics.PROGRESS_TABLE, p, key, encode_progress(
        dataclasses.replace(progress, step_index=progress.step_index + 1))))
    p, key, value = first(topics.GRANT_TABLE)
    state = GrantState.from_json(value)
    planted.append((topics.GRANT_TABLE, p, key, dataclasses.replace(
        state, current_streak=state.current_streak + 5).to_json()))
    p, key, value = first(topics.CLAIM_DEDUPE_TABLE)
    planted.append((topics.CLAIM_DEDUPE_TABLE, p, key, encode_sighting(
        decode_sighting(value)._replace(fingerprint=b"\x00" * 8))))
    p, key, value = first(topics.POSITIONS_TABLE)
    planted.append((topics.POSITIONS_TABLE, p, key,
                    topics.encode_position(topics.decode_position(value) - 1)))

    async def plant() -> None:
        producer = kafka.producer(s)
        await producer.start()
        try:
            for table, partition, k, v in planted:
                await producer.send_and_wait(topics.changelog_topic(s.worker_group, table), v,
                                             key=k, partition=partition)
        finally:
            await producer.stop()
    asyncio.run(plant())
    stale = streams(["audit-changelogs", "--json"], s)
    found = orjson.loads(stale.stdout)
    assert stale.returncode == 1 and not found["ok"]
    assert found["differing"] == {t: 1 for t in topics.WORKER_TABLES}, found["differences"]
    shown = streams(["audit-changelogs"], s)
    assert shown.returncode == 1 and b"7 keys differ" in shown.stdout, shown.stdout
