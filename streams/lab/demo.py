"""``streams lab demo``: the main job on the embedded local stack, with its numbers proven.

Starts the broker and PostgreSQL, migrates, creates the topics, starts every stage of the
topology (the worker, the ledger sink, the totals writer, the action ledger sink, the progress
writer) and the monitor as separate processes, publishes an XP workload and an action workload,
waits until every consumer group has lag 0, and prints a summary checked against both
workloads' expectations; exits 1 on any mismatch. A claim workload (daily-login claims over
40 days in zones with DST, several claims a day) goes through the grant stream: awards,
streaks and the award XP in the ledger are checked against its own expectation. The policy
and a season calendar (a rollover 14 days before the end) are published first; every
learner's seasonal XP is checked against the expectation and the ledger. Last, the changelog
audit recovers the totals from their changelog as a worker with an empty store would and
compares them with the ledger (:mod:`streams.audit.changelogs`).
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
from rich.console import Console
from rich.table import Table

from streams import topology
from streams.audit.changelogs import audit_changelogs
from streams.dev.procs import free_port, interrupt_on_sigterm
from streams.dev.stack import LocalStack, PipelineProcess
from streams.lab.loadgen import (
    CLAIM_POLICY,
    CLAIM_POLICY_PUBLISHED_MS,
    LoadSpec,
    claim_calendar,
    generate,
    generate_actions,
    generate_claims,
    publish_records,
    publish_timed,
    workload_start,
)
from streams.lab.outcome import (
    read_action_outcome,
    read_grant_outcome,
    read_outcome,
    read_season_outcome,
)
from streams.lag import wait_caught_up
from streams.policies import Calendar
from streams.status import collect, render

CLAIM_DAYS = 40
"""Days of the claim workload (ending yesterday: autumn DST changes in both hemispheres)."""


def run_demo(stack: LocalStack, events: int, students: int, seed: int, keep: bool) -> int:
    """Run the demo on ``stack`` (not yet started: its settings give the partitions and the
    pipeline's tuning); return the process exit status (0 = every check passed).

    Ctrl-C and SIGTERM stop every process it started before it exits.
    """
    interrupt_on_sigterm()
    console = Console(width=None if sys.stdout.isatty() else 160)
    base = stack.base_dir
    procs: list[PipelineProcess] = []
    try:
        console.print(f"[bold]XP Streams demo[/] in {base}")
        broker = {"kafka": "Apache Kafka (one node)",
                  "kafka-3": "Apache Kafka (three nodes)"}[stack.broker_kind]
        console.print(f"starting {broker} and PostgreSQL 15, applying migrations ...")
        settings = stack.start()
        stack.create_topics()
        commands = dict.fromkeys(st.command for st in topology.stages(settings))
        for command in (*commands, "monitor"):
            proc = PipelineProcess(command, settings, base / f"{command}.log", free_port())
            proc.start()
            procs.append(proc)
        console.print(f"started {', '.join(p.command for p in procs)} (logs in {base})")

        console.print(f"generating {events:,} records for {students:,} students (seed {seed}) ...")
        records, expected = generate(LoadSpec(events=events, students=students, seed=seed,
                                              max_record_bytes=settings.max_record_bytes))
        actions, action_expected = generate_actions(max(events // 5, 100),
                                                    max(students // 10, 10), seed)
        claims, claim_expected = generate_claims(max(students // 20, 20), CLAIM_DAYS, seed)
        for student, awards in claim_expected.awards.items():  # awards are XP events too
            expected.students[student] = [sum(xp for _, xp in awards), 0, None]
        expected.valid_unique += claim_expected.award_count
        calendar = claim_calendar()
        seasons = Calendar.from_record(calendar)
        xp_season = seasons.season_of(workload_start(events))
        if xp_season != seasons.season_of(workload_start(0)):
            raise ValueError(f"{events:,} events start before the demo's current season")
        seasonal = {sid: (xp_season, row[0]) for sid, row in expected.students.items()
                    if sid not in claim_expected.awards and xp_season is not None}
        seasonal |= claim_expected.seasonal
        console.print("publishing the grant policy and the season calendar ...")
        asyncio.run(publish_timed(settings, settings.policies_topic, [
            (b"daily_login:1", orjson.dumps(CLAIM_POLICY), CLAIM_POLICY_PUBLISHED_MS),
            (b"seasons:1", orjson.dumps(calendar), CLAIM_POLICY_PUBLISHED_MS)]))
        started = time.monotonic()
        publish_s = asyncio.run(publish_records(
            settings, records,
            progress=lambda n: console.print(f"  published {n:,}/{len(records):,}"),
        ))
        console.print(f"publishing {len(actions):,} action records ...")
        asyncio.run(publish_records(settings, actions, topic=settings.action_topic))
        console.print(f"publishing {len(claims):,} daily-login claims of "
                      f"{len(claim_expected.awards):,} learners over {CLAIM_DAYS} days ...")
        asyncio.run(publish_timed(settings, settings.claims_topic, claims))

        def progress(lags: dict[str, int]) -> None:
            dead = [p.command for p in procs if not p.alive()]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited; see the logs in {base}")
            shown = ", ".join(f"{g}={'-' if v < 0 else f'{v:,}'}" for g, v in lags.items())
            console.print(f"  waiting for lag 0: {shown}")

        async def catch_up() -> dict[str, tuple[float, float]]:
            sources = {settings.xp_topic, settings.action_topic, settings.claims_topic}
            spans = await wait_caught_up(settings, [
                (g, t) for g, t in topology.group_topics(settings) if t in sources
            ], timeout_s=1800, on_progress=progress, interval_s=2.0)
            # A changelog is complete only once the worker has caught up.
            spans.update(await wait_caught_up(settings, [
                (g, t) for g, t in topology.group_topics(settings) if t not in sources
            ], timeout_s=600, on_progress=progress, interval_s=1.0))
            return spans

        spans = asyncio.run(catch_up())
        outcome = read_outcome(settings, expected)
        action_outcome = read_action_outcome(settings, action_expected)
        grant_outcome = read_grant_outcome(settings, claim_expected)
        season_outcome = read_season_outcome(settings, seasonal)
        audit = asyncio.run(audit_changelogs(settings))
        problems = (outcome.problems(expected) + action_outcome.problems
                    + grant_outcome.problems + season_outcome.problems
                    + [f"changelog audit: {d.to_dict()}" for d in audit.differences[:20]])

        table = Table(title="XP Streams demo summary")
        table.add_column("what")
        table.add_column("pipeline", justify="right")
        table.add_column("expected", justify="right")

        def row(what: str, got: int, want: int | None) -> None:
            """A summary row; one whose figures differ is also a problem (the demo fails)."""
            table.add_row(what, f"{got:,}", "" if want is None else f"{want:,}")
            if want is not None and got != want:
                problems.append(f"{what}: {got:,} in the pipeline, {want:,} expected")

        award_count = claim_expected.award_count
        xp_rows = outcome.ledger_rows - grant_outcome.ledger_rows  # the game servers' events
        row("XP records published", len(records), expected.records)
        row("XP events in the ledger (awards apart)", xp_rows, expected.valid_unique - award_count)
        row("XP records dropped as duplicates or conflicts",
            len(records) - xp_rows - sum(outcome.dlq.values()),
            expected.duplicates + expected.conflicts)
        for reason in sorted(set(expected.invalid) | set(outcome.dlq)):
            row(f"XP DLQ: {reason}", outcome.dlq.get(reason, 0), expected.invalid.get(reason, 0))
        row("students (xp_totals rows)", outcome.totals_rows, len(expected.students))
        row("students: xp_totals != SUM(ledger delta)", len(outcome.ledger_vs_totals), 0)
        row("students: totals != loadgen expectation", len(outcome.expected_vs_totals), 0)
        row("action records published", len(actions), None)
        row("action events (action_events rows)", action_outcome.ledger_rows,
            len(action_expected.ids))
        row("vector_progress rows folded", action_outcome.progress_rows,
            len(action_expected.progress))
        row("action DLQ", action_outcome.dlq, action_expected.invalid)
        row("vector_progress rows != expected progress",
            sum(1 for p in action_outcome.problems if "vector_progress" in p), 0)
        row("daily-login claims published", len(claims), claim_expected.claims)
        row("awards (xp_awards rows)", grant_outcome.awards, award_count)
        row("awards in the ledger (rows by receipt)", grant_outcome.ledger_rows, award_count)
        row("award XP in the ledger", grant_outcome.ledger_xp,
            sum(xp for a in claim_expected.awards.values() for _, xp in a))
        row("streaks != expected (current, longest, tokens)",
            grant_outcome.streaks_differing, 0)
        row("learners: seasonal XP != expected (season, XP)", season_outcome.differing, 0)
        row("learners: seasonal XP != SUM(ledger delta) of the season",
            season_outcome.ledger_differing, 0)
        row("seasonal XP of the current season (xp_balance)", season_outcome.current_season_xp,
            sum(xp for s, xp in seasonal.values() if s == "current"))
        row("worker table keys recovered from their changelogs != ledgers",
            len(audit.differences), 0)
        table.add_row("publish rate (records/s)", f"{len(records) / publish_s:,.0f}", "")
        for label, group, count in (
            ("worker (XP and action records)", settings.worker_group,
             len(records) + len(actions)),
            ("ledger sink", settings.ledger_group, len(records)),
            ("totals writer", settings.totals_group, None),
        ):
            first, last = spans[group]
            if count is not None and last > first:
                table.add_row(f"{label}: records/s, first commit to lag 0",
                              f"{count / (last - first):,.0f}", "")
        console.print(table)
        console.print(f"wall time from first publish to all lag 0: "
                      f"{time.monotonic() - started:.1f} s")
        console.print("Prometheus metrics are served at:")
        for proc in procs:
            console.print(f"  {proc.command:14} http://127.0.0.1:{proc.metrics_port}/metrics")
        render(asyncio.run(collect(settings, window_s=1.0)), console)
        if problems:
            for p in problems:
                console.print(f"[red]MISMATCH[/] {p}")
            return 1
        console.print("[green]all checks passed[/]: ledger exact, totals = SUM(ledger), "
                      "totals = expected, DLQ = expected; action ledger exact, vector progress "
                      "= expected, action DLQ = expected; awards, streaks and award XP = "
                      "expected; seasonal XP = expected = SUM(ledger) per season; every table "
                      "of the worker recovered from its changelog = the ledgers")
        return 0
    except KeyboardInterrupt:
        console.print("interrupted: stopping everything")
        return 130
    finally:
        for proc in procs:
            proc.stop()
        stack.stop(remove=not keep)
