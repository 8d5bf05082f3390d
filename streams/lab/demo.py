"""``streams demo``: the main job on the embedded local stack, with its numbers proven.

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
from streams.dev.stack import LocalStack, PipelineProcess, default_base_dir
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
from streams.settings import Settings
from streams.status import collect, render

CLAIM_DAYS = 40
"""Days of the claim workload (ending yesterday: autumn DST changes in both hemispheres)."""


def run_demo(events: int, students: int, partitions: int, seed: int, keep: bool) -> int:
    """Run the demo; return the process exit status (0 = every check passed).

    Ctrl-C and SIGTERM stop every process it started before it exits.
    """
    interrupt_on_sigterm()
    console = Console(width=None if sys.stdout.isatty() else 160)
    base = default_base_dir()
    stack = LocalStack(base, settings=Settings(topic_partitions=partitions))
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
        table.add_row("records published", f"{len(records):,}", f"{expected.records:,}")
        table.add_row("valid events (ledger rows)", f"{outcome.ledger_rows:,}",
                      f"{expected.valid_unique:,}")
        table.add_row("duplicates + conflicts dropped",
                      f"{len(records) - outcome.ledger_rows - sum(outcome.dlq.values()):,}",
                      f"{expected.duplicates + expected.conflicts:,}")
        for reason in sorted(set(expected.invalid) | set(outcome.dlq)):
            table.add_row(f"DLQ: {reason}", f"{outcome.dlq.get(reason, 0):,}",
                          f"{expected.invalid.get(reason, 0):,}")
        table.add_row("students (xp_totals rows)", f"{outcome.totals_rows:,}",
                      f"{len(expected.students):,}")
        table.add_row("students: xp_totals != SUM(ledger delta)",
                      f"{len(outcome.ledger_vs_totals):,}", "0")
        table.add_row("students: totals != loadgen expectation",
                      f"{len(outcome.expected_vs_totals):,}", "0")
        table.add_row("action records published", f"{len(actions):,}", "")
        table.add_row("action events (action_events rows)", f"{action_outcome.ledger_rows:,}",
                      f"{len(action_expected.ids):,}")
        table.add_row("vector_progress rows folded", f"{action_outcome.progress_rows:,}",
                      f"{len(action_expected.progress):,}")
        table.add_row("action DLQ", f"{action_outcome.dlq:,}", f"{action_expected.invalid:,}")
        table.add_row("vector_progress rows != expected progress",
                      f"{sum(1 for p in action_outcome.problems if 'vector_progress' in p)}",
                      "0")
        table.add_row("daily-login claims published", f"{len(claims):,}",
                      f"{claim_expected.claims:,}")
        table.add_row("awards (xp_awards rows)", f"{grant_outcome.awards:,}",
                      f"{claim_expected.award_count:,}")
        table.add_row("award XP in the ledger (rows by receipt)", f"{grant_outcome.ledger_xp:,}",
                      f"{sum(xp for a in claim_expected.awards.values() for _, xp in a):,}")
        table.add_row("streaks != expected (current, longest, tokens)",
                      f"{grant_outcome.streaks_differing:,}", "0")
        table.add_row("learners: seasonal XP != expected (season, XP)",
                      f"{season_outcome.differing:,}", "0")
        table.add_row("learners: seasonal XP != SUM(ledger delta) of the season",
                      f"{season_outcome.ledger_differing:,}", "0")
        table.add_row("seasonal XP of the current season (xp_balance)",
                      f"{season_outcome.current_season_xp:,}",
                      f"{sum(xp for s, xp in seasonal.values() if s == 'current'):,}")
        table.add_row("students: totals recovered from the changelog != ledger",
                      f"{len(audit.differences):,}", "0")
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
                      "expected; seasonal XP = expected = SUM(ledger) per season; the totals "
                      "recovered from their changelog = the ledger")
        return 0
    except KeyboardInterrupt:
        console.print("interrupted: stopping everything")
        return 130
    finally:
        for proc in procs:
            proc.stop()
        stack.stop(remove=not keep)
