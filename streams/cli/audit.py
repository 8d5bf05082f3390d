"""Audits and the rollout: ``streams replay``, ``reconcile``, ``rebuild-totals``,
``audit-changelogs``, ``backfill``, ``compare-xp``, ``verify``, ``backfill-vectors``
(docs/design.md, Rollout)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from streams.cli.base import (
    Duration,
    load_settings,
    main,
    progress_bar,
    quiet_clients,
    run_until_signal,
    setup_logging,
)
from streams.settings import LEGACY_DATABASE_URL, Settings, variable


@main.command()
@click.option("--no-backfill-check", is_flag=True,
              help="Leave out the check that every profile has its five vector rows.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def verify(no_backfill_check: bool, as_json: bool) -> None:
    """Run the verification queries: duplicate keys, missing required fields, profiles
    without their vector rows; exit 1 when one finds anything (docs/design.md, Rollout)."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    from streams.audit.verify import verify as run_checks

    found, counts = run_checks(load_settings().database_url, not no_backfill_check)
    if as_json:
        click.echo(orjson.dumps({"checks": [{"name": c.name, "ok": c.ok,
                                             "anomalies": c.anomalies,
                                             "sample": [list(map(str, r)) for r in c.sample]}
                                            for c in found], "rows": counts}).decode())
    else:
        table = Table(title="verification")
        for col in ("check", "result", "sample"):
            table.add_column(col)
        for c in found:
            table.add_row(c.name, "ok" if c.ok else f"{c.anomalies} found",
                          "; ".join(", ".join(map(str, r)) for r in c.sample[:2]))
        Console().print(table)
        click.echo("rows: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    sys.exit(0 if all(c.ok for c in found) else 1)


@main.command("backfill-vectors")
def backfill_vectors_cmd() -> None:
    """Seed vector progress: a v1 row at step 0 for each of the five vectors of every known
    profile that lacks one; safe to repeat (docs/design.md, Rollout)."""
    from streams.audit.verify import backfill_vectors

    click.echo(f"inserted {backfill_vectors(load_settings().database_url):,} vector_progress rows")


@main.command()
@click.option("--since", help="Start: RFC 3339 with offset, or a duration ago (24h, 30m, 7d).")
@click.option("--until", help="End (exclusive), same forms; default: the end when started.")
@click.option("--from-offset", "from_offsets", multiple=True, metavar="P:O",
              help="Start of partition P at offset O (repeatable, or comma-separated).")
@click.option("--to-offset", "to_offsets", multiple=True, metavar="P:O",
              help="End (exclusive) of partition P at offset O.")
@click.option("--student", "students", multiple=True, help="Only this student (repeatable).")
@click.option("--events-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the accepted events here (.csv: CSV, else JSON lines).")
@click.option("--totals-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the per-student recomputed totals here (.csv: CSV, else JSON lines).")
@click.option("--output", "report_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the audit report here (JSON).")
@click.option("--report", "report_old", type=click.Path(dir_okay=False, path_type=Path),
              hidden=True)  # the old name of --output, for one release
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON, not tables.")
def replay(since: str | None, until: str | None, from_offsets: tuple[str, ...],
           to_offsets: tuple[str, ...], students: tuple[str, ...], events_out: Path | None,
           totals_out: Path | None, report_out: Path | None, report_old: Path | None,
           as_json: bool) -> None:
    """Replay the XP topic over a range without a consumer group; audit it against the ledger
    and xp_totals. Exits 1 when a difference is found."""
    import orjson

    report_out = report_out or report_old
    from rich.console import Console
    from rich.progress import Progress

    from streams.audit.ranges import RangeSpec, parse_instant, parse_offsets
    from streams.audit.replay import EventWriter, Replay, render, write_totals

    quiet_clients()
    settings = load_settings()
    try:
        spec = RangeSpec(
            since=None if since is None else parse_instant(since),
            until=None if until is None else parse_instant(until),
            from_offsets=parse_offsets(from_offsets) or None,
            to_offsets=parse_offsets(to_offsets) or None)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    err = Console(stderr=True)
    out_file = None if events_out is None else events_out.open("wb")
    writer = None if out_file is None else EventWriter(
        out_file, "csv" if events_out and events_out.suffix == ".csv" else "jsonl")
    try:
        with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
            task = progress.add_task("replaying", total=None)
            job = Replay(settings, spec, frozenset(students), writer,
                         lambda done, total: progress.update(task, completed=done, total=total))
            try:
                report = asyncio.run(job.run())
            except (LookupError, ValueError) as exc:
                raise click.ClickException(str(exc).strip("'\"")) from None
    finally:
        if writer is not None:
            writer.close()
        if out_file is not None:
            out_file.close()
    if totals_out is not None:
        write_totals(report, totals_out)
    if report_out is not None:
        report_out.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
    if as_json:
        click.echo(orjson.dumps(report.to_dict()).decode())
    else:
        render(report, Console())
    sys.exit(1 if report.differing() else 0)



@main.command("reconcile")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--wait", "wait_s", type=Duration(), default="60s", show_default=True,
              help="How long to wait for the pipeline to catch up before re-checking.")
@click.option("--every", type=Duration(), default=None,
              help="Run again at this interval, exporting the mismatch count on XP_METRICS_PORT.")
def reconcile_cmd(as_json: bool, wait_s: float, every: float | None) -> None:
    """Compare xp_totals with SUM(xp_events.delta) and count(*) per student, re-checking what
    events in flight explain. Exits 1 on a confirmed mismatch, 3 when the pipeline did not catch
    up in time to confirm."""
    import orjson
    from rich.console import Console

    from streams.audit.reconcile import reconcile, render

    quiet_clients()
    settings = load_settings()
    if every is None:
        result = reconcile(settings, wait_s)
        if as_json:
            click.echo(orjson.dumps(result.to_dict()).decode())
        else:
            render(result, Console())
        sys.exit(result.exit_code)
    setup_logging()
    from streams.audit.reconcile import run_every
    from streams.health import Health, serve
    from streams.metrics import ReconcileMetrics

    metrics, health = ReconcileMetrics(), Health()
    health.set_readiness(lambda: None)
    serve(settings.metrics_port, metrics.registry, health)
    run_until_signal(lambda stop: run_every(settings, metrics, every, wait_s, stop), health)


@main.command("rebuild-totals")
@click.option("--student", "--user", "users", multiple=True,
              help="Only this student (repeatable; --user: its old name).")
@click.option("--force", is_flag=True,
              help="Also replace rows whose version is above the ledger's (only at sink lag 0).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def rebuild_totals_cmd(users: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Recompute xp_totals from the ledger, safely while the pipeline runs."""
    import dataclasses

    import orjson
    from rich.console import Console
    from rich.progress import Progress

    from streams.audit.rebuild import rebuild_totals

    settings = load_settings()
    err = Console(stderr=True)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("ledger rows folded", total=None)
        result = rebuild_totals(settings.database_url, list(users) or None, force,
                                on_progress=lambda n: progress.update(task, completed=n))
    if as_json:
        click.echo(orjson.dumps(dataclasses.asdict(result)).decode())
        return
    click.echo(f"rebuilt {result.students:,} students from {result.ledger_rows:,} ledger rows in "
               f"{result.seconds:.1f} s: {result.written:,} rows written, "
               f"{result.ahead_of_ledger:,} ahead of the ledger left alone"
               + ("" if force or not result.ahead_of_ledger else " (--force replaces them)"))


def _legacy_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options naming a legacy balance table (defaults: the legacy student_progress)."""
    options = [
        click.option("--source-url", envvar=LEGACY_DATABASE_URL.name,
                     help=f"PostgreSQL URL of the legacy table [env {LEGACY_DATABASE_URL.name}; "
                          f"default: {variable('database_url').name}]."),
        click.option("--table", default="student_progress", show_default=True),
        click.option("--student-column", default="student_id", show_default=True),
        click.option("--points-column", default="total_points", show_default=True),
        click.option("--games-column", default="games_played", show_default=True),
        click.option("--game-type-column", default="last_game_type", show_default=True),
        click.option("--played-at-column", default="last_played_at", show_default=True),
        click.option("--where", default="word_set_id IS NULL AND homework_id IS NULL",
                     show_default=True, help="SQL condition selecting one row per student."),
        click.option("--source", "source_name", help="Name of this backfill source in event "
                     "ids and metadata [default: the table name]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _legacy(settings: Settings, o: dict[str, Any]) -> Any:
    from streams.audit.backfill import LegacySource

    return LegacySource(
        url=o["source_url"] or settings.database_url, table=o["table"],
        student=o["student_column"], points=o["points_column"], games=o["games_column"],
        game_type=o["game_type_column"], played_at=o["played_at_column"], where=o["where"],
        name=o["source_name"] or o["table"])


@main.command()
@_legacy_options
@click.option("--student", "--user", "users", multiple=True,
              help="Only this student (repeatable; --user: its old name).")
@click.option("--dry-run", is_flag=True, help="Print what would be published; write nothing.")
@click.option("--reset", is_flag=True,
              help="Reverse earlier backfill events of this source, then import again.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation of --reset.")
@click.option("--wait", "wait_s", type=Duration(), default="120s", show_default=True,
              help="With --reset: how long to wait for the pipeline to catch up first.")
def backfill(users: tuple[str, ...], dry_run: bool, reset: bool, yes: bool, wait_s: float,
             **legacy: Any) -> None:
    """Import legacy balances as opening-balance backfill events (deterministic ids: a re-run
    never double counts)."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from streams.audit import backfill as bf

    quiet_clients()
    settings = load_settings()
    source = _legacy(settings, legacy)
    if reset and not dry_run and not yes:
        click.confirm(f"Reverse every earlier backfill event of source {source.name!r}"
                      + (f" for {len(users)} students" if users else "")
                      + " and import again?", abort=True)
    if reset:
        bf.wait_for_pipeline(settings, wait_s)
    err = Console(stderr=True)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("legacy rows read", total=None)
        p = bf.plan(settings, source, list(users) or None, reset,
                    lambda n: progress.update(task, completed=n))
        published = 0
        if not dry_run and p.events:
            task = progress.add_task("events published", total=len(p.events))
            published = asyncio.run(bf.publish(settings, p.events,
                                               lambda n: progress.update(task, completed=n)))
    out = Console()
    if dry_run:
        table = Table(title=f"would publish {len(p.events):,} events (first 20)")
        for col in ("id", "student", "kind", "delta", "created_at", "games"):
            table.add_column(col)
        for e in p.events[:20]:
            table.add_row(e["id"], e["student_id"], e["kind"], str(e["delta"]), e["created_at"],
                          str(e["metadata"]["games_played"]))
        out.print(table)
        totals = Table(title="resulting xp_totals.total_xp (first 20 students)")
        totals.add_column("student")
        totals.add_column("total XP", justify="right")
        for sid, total in list(p.resulting_totals.items())[:20]:
            totals.add_row(sid, f"{total:,}")
        out.print(totals)
    verb = "would publish" if dry_run else "published"
    click.echo(f"source {p.source!r} generation {p.generation}: {p.legacy_rows:,} legacy rows, "
              f"{verb} {p.backfills:,} backfill and {p.reversals:,} reversal events"
              + ("" if dry_run else f" ({published:,} acknowledged)")
              + f"; {p.already_in_ledger:,} already in the ledger (dropped as duplicates); "
              f"{len(p.rejected):,} rows rejected")
    for line in p.rejected[:20]:
        click.echo(f"rejected: {line}")
    sys.exit(1 if p.rejected else 0)


@main.command("compare-xp")
@_legacy_options
@click.option("--student", "--user", "users", multiple=True,
              help="Only this student (repeatable; --user: its old name).")
@click.option("--active-since", help="Only students whose legacy last play is at or after "
              "this (RFC 3339 or a duration ago: 30d).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compare_xp(users: tuple[str, ...], active_since: str | None, as_json: bool,
               **legacy: Any) -> None:
    """Compare the legacy value with the ledger sum per student; the expected delta is 0
    (docs/design.md, Rollout). Exits 1 when a student's delta is not 0."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    from streams.audit.compare import compare
    from streams.audit.ranges import parse_instant

    settings = load_settings()
    try:
        since = None if active_since is None else parse_instant(active_since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--active-since") from None
    result = compare(settings.database_url, _legacy(settings, legacy), list(users) or None, since)
    if as_json:
        click.echo(orjson.dumps({"compared": result.compared, "matching": result.matching,
                                 "differing": result.differing}).decode())
    else:
        out = Console()
        if result.differing:
            table = Table(title=f"students whose delta is not 0 (first 50 of "
                                f"{len(result.differing):,})")
            for col in ("student", "legacy XP", "ledger XP", "delta"):
                table.add_column(col, justify="right")
            for d in result.differing[:50]:
                table.add_row(d["student_id"], f"{d['legacy_xp']:,}", f"{d['ledger_xp']:,}",
                              f"{d['delta']:+,}")
            out.print(table)
        click.echo(f"compared {result.compared:,} students: {result.matching:,} with delta 0, "
                  f"{len(result.differing):,} differing")
    sys.exit(1 if result.differing else 0)


@main.command("replay-grants")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--wait", "wait_s", type=Duration(), default="60s", show_default=True,
              help="How long to wait for the award sink to reach the outcomes topic's end.")
def replay_grants_cmd(as_json: bool, wait_s: float) -> None:
    """Decide the claims topic again from offset 0 and compare every outcome (byte for byte)
    and award with PostgreSQL. Exit 1 on a difference, 3 when the award sink did not catch up
    in time."""
    import orjson

    from streams.audit.grants import replay_grants

    quiet_clients()
    with progress_bar("claims decided again") as step:
        result = asyncio.run(replay_grants(load_settings(), wait_s, step))
    if as_json:
        click.echo(orjson.dumps(result.to_dict()).decode())
    else:
        click.echo(f"replayed {result.records:,} claims: {result.outcomes:,} outcomes, "
                   f"{result.awards:,} awards, invalid {result.invalid or 'none'}; "
                   + ("identical to PostgreSQL" if result.identical else
                      f"differences: outcomes {len(result.outcomes_missing)} missing, "
                      f"{len(result.outcomes_extra)} extra, "
                      f"{len(result.outcomes_differing)} differing; awards "
                      f"{len(result.awards_missing)} missing, {len(result.awards_extra)} "
                      f"extra, {len(result.awards_differing)} differing"))
    sys.exit(0 if result.identical else 3 if not result.caught_up else 1)


@main.command("audit-changelogs")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.option("--limit", default=20, show_default=True,
              help="Differing keys to show in the table.")
def audit_changelogs_cmd(as_json: bool, limit: int) -> None:
    """Recover every table of the worker from its changelog into a scratch store (no consumer
    group, read committed) and check it against the ledgers: totals and progress against the
    fold of their ledger rows, dedupe sightings against the ledger rows of their event ids,
    grant states against a replay of the claims topic, positions against the worker group's
    committed offsets; exit 1 with the differing keys. Run it at lag 0 (docs/design.md, "Fold
    worker: checkpoints")."""
    import orjson
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from streams.audit.changelogs import audit_changelogs

    quiet_clients()
    settings = load_settings()
    err = Console(stderr=True)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("recovering the changelogs", total=None)
        try:
            result = asyncio.run(audit_changelogs(
                settings, lambda n: progress.update(task, completed=n)))
        except LookupError as exc:
            raise click.ClickException(str(exc).strip("'\"")) from None
    if as_json:
        click.echo(orjson.dumps(result.to_dict()).decode())
    else:
        click.echo(f"recovered {', '.join(f'{t} {n:,} keys' for t, n in result.keys.items())} "
                   f"from {sum(result.records.values()):,} changelog records; checked against "
                   f"{', '.join(f'{t} {n:,}' for t, n in result.ledger_rows.items())} "
                   f"({result.seconds:.1f} s)")
        if result.differences:
            table = Table(title=f"{len(result.differences):,} keys differ from the ledger")
            for col in ("table", "key", "recovered", "ledger"):
                table.add_column(col)
            for d in result.differences[:limit]:
                table.add_row(d.table, d.key, str(d.recovered), str(d.ledger))
            Console().print(table)
        else:
            click.echo("changelogs agree with the ledger")
    sys.exit(0 if result.ok else 1)
