"""The ``streams`` console script (README, Operating it). Settings come from the environment."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click

from streams.errors import StreamsError
from streams.settings import Settings, redact_url


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from None


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _quiet_clients() -> None:
    """Short commands report failures in one line themselves; the clients' logs would repeat
    them on stderr."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def exit_on_sigterm_until_started() -> None:
    """Until the process's own SIGTERM handling is in place (the event loop's, installed once
    start-up is done: imports, settings, Faust's app), a SIGTERM exits at once with status 0:
    nothing has been read, so there is nothing to finish. Without this the default action ends
    the process with status -15, as a supervisor stopping a slow starter saw."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit)


def _run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run coroutine function ``main(stop_event)`` until it returns; SIGTERM/SIGINT set stop."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        asyncio.run(runner())
    finally:
        ignore_sigterm_from_now_on()


def ignore_sigterm_from_now_on() -> None:
    """Ignore further SIGTERMs: the work is flushed and the process is exiting. Closing the
    event loop puts SIGTERM back to its default (terminate), so a second SIGTERM (an operator
    or supervisor repeating it) would otherwise end the exit abruptly with status -15."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _Cli(click.Group):
    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        """Like click's, but bad arguments give one line (``streams chaos: Invalid value for
        '--faults': ... (see --help)``) and exit 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "streams"
            click.echo(f"{where}: {exc.format_message()} (see --help)", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except StreamsError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Cli)
@click.version_option(package_name="xp-streams")
def main() -> None:
    """XP Streams: dedupe and fold XP events into totals, and keep the ledger in PostgreSQL."""


@main.command()
def worker() -> None:
    """Run the fold worker: validate, DLQ, dedupe, fold XP into the totals table and action
    events into vector progress (Faust tables, batch reader)."""
    exit_on_sigterm_until_started()
    from streams.metrics import Metrics
    from streams.worker.app import run

    settings = _settings()
    metrics = Metrics()
    metrics.serve(settings.metrics_port)
    run(settings, metrics)


def _run_sink(command: str) -> None:
    """Run the sink stage of ``command`` (:func:`streams.topology.sink`) until SIGTERM."""
    exit_on_sigterm_until_started()
    from streams import topology
    from streams.metrics import Metrics
    from streams.sink import PostgresSink

    _logging()
    settings = _settings()
    metrics = Metrics()
    stage = topology.sink(settings, command)
    writer = topology.build_writer(stage, settings, metrics)
    sink = PostgresSink(settings, stage.topic, stage.group, writer, metrics)
    metrics.serve(settings.metrics_port)
    _run_until_signal(sink.run)


@main.command()
def sink() -> None:
    """Run the ledger sink: XP topic -> PostgreSQL xp_events (its own consumer group)."""
    _run_sink("sink")


@main.command("totals-writer")
def totals_writer() -> None:
    """Run the totals writer: the worker's totals changelog -> PostgreSQL xp_totals."""
    _run_sink("totals-writer")


@main.command("action-sink")
def action_sink() -> None:
    """Run the action ledger sink: action topic -> PostgreSQL action_events."""
    _run_sink("action-sink")


@main.command("progress-writer")
def progress_writer() -> None:
    """Run the progress writer: the worker's vector progress changelog -> vector_progress."""
    _run_sink("progress-writer")


@main.command()
@click.option("--no-backfill-check", is_flag=True,
              help="Leave out the check that every profile has its five vector rows.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def verify(no_backfill_check: bool, as_json: bool) -> None:
    """The verification queries (docs/design.md, Rollout): duplicate keys, missing required
    fields, profiles without their vector rows; exit 1 when one finds anything."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    from streams.audit.verify import verify as run_checks

    found, counts = run_checks(_settings().database_url, not no_backfill_check)
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
    """The vector backfill (docs/design.md, Rollout): a v1 row at step 0 for each of the five
    vectors of every known profile that lacks one (safe to repeat)."""
    from streams.audit.verify import backfill_vectors

    click.echo(f"inserted {backfill_vectors(_settings().database_url):,} vector_progress rows")


@main.command()
@click.option("--interval", default=5.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds between lag samples.")
@click.option("--reconcile-every", default=60.0, show_default=True, type=click.FloatRange(1),
              help="Seconds between reconciliations (run only when every group is at lag 0).")
def monitor(interval: float, reconcile_every: float) -> None:
    """Export consumer lag (from the broker) and reconciliation results as Prometheus metrics."""
    from streams.metrics import MonitorMetrics
    from streams.monitor import Monitor

    _logging()
    settings = _settings()
    metrics = MonitorMetrics()
    metrics.serve(settings.metrics_port)
    _run_until_signal(Monitor(settings, metrics, interval, reconcile_every).run)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--watch", type=click.FloatRange(0.5), default=None, metavar="SECONDS",
              help="Refresh every SECONDS until Ctrl-C.")
def status(as_json: bool, watch: float | None) -> None:
    """Show lag per group and partition, throughput, DLQ counts and reconciliation."""
    import orjson
    from rich.console import Console

    from streams.status import Status, collect, render

    _quiet_clients()
    settings = _settings()
    console = Console()

    def show(snapshot: Status) -> None:
        if as_json:
            click.echo(orjson.dumps(snapshot.to_json(), option=orjson.OPT_INDENT_2).decode())
        else:
            render(snapshot, console)

    async def run() -> None:
        snapshot = await collect(settings)
        show(snapshot)
        while watch is not None:
            await asyncio.sleep(watch)
            snapshot = await collect(settings, previous=snapshot)
            if not as_json:
                console.clear()
            show(snapshot)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("source", type=click.File("rb"))
@click.option("--topic", help="Topic to publish to (default: XP_TOPIC).")
def publish(source: click.utils.LazyFile, topic: str | None) -> None:
    """Publish JSON lines from SOURCE, a file or - for standard input: one record a line, an
    event object or an array of one student's events (a batched record)."""
    from streams.publish import publish_lines

    _quiet_clients()
    count = asyncio.run(publish_lines(_settings(), iter(source), topic))
    click.echo(f"published {count} records")


@main.command()
@click.option("--events", default=200_000, show_default=True, type=click.IntRange(1))
@click.option("--students", default=10_000, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--duplicates", "duplicate_ratio", default=0.05, show_default=True,
              type=click.FloatRange(0, 0.5), help="Share of records that resend an earlier one.")
@click.option("--conflicts", "conflict_ratio", default=0.002, show_default=True,
              type=click.FloatRange(0, 0.1), help="Share of records reusing an id, other content.")
@click.option("--invalid", "invalid_ratio", default=0.01, show_default=True,
              type=click.FloatRange(0, 0.5), help="Share of invalid records.")
@click.option("--expected", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write the expected per-student outcome here (JSON).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the records as JSON lines here instead of publishing them.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 500),
              help="Pack up to this many events of one student into one record "
                   "(xp_event_batch.v1.json); 1 = one event per record.")
def loadgen(events: int, students: int, seed: int, duplicate_ratio: float, conflict_ratio: float,
            invalid_ratio: float, expected: Path, output: Path | None, batch: int) -> None:
    """Generate a seeded, realistic workload; publish it (or write it) and its expected outcome."""
    from streams.lab.loadgen import LoadSpec, batch_records, generate, publish_records

    _quiet_clients()
    settings = _settings()
    spec = LoadSpec(events=events, students=students, seed=seed, duplicate_ratio=duplicate_ratio,
                    conflict_ratio=conflict_ratio, invalid_ratio=invalid_ratio,
                    max_record_bytes=settings.max_record_bytes)
    records, outcome = generate(spec)
    if batch > 1:
        records = batch_records(records, batch, settings.max_record_bytes)
    expected.write_bytes(outcome.to_json())
    if output is not None:
        import orjson

        with output.open("wb") as f:
            for key, value in records:
                f.write(orjson.dumps({"key": key.decode("utf-8", "replace") if key else None,
                                      "value": value.decode("utf-8", "replace")}) + b"\n")
        click.echo(f"wrote {len(records)} records to {output}")
        return
    seconds = asyncio.run(publish_records(settings, records))
    click.echo(f"published {len(records)} records in {seconds:.1f} s "
               f"({len(records) / seconds:,.0f} records/s); expected outcome in {expected}")


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
@click.option("--report", "report_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the audit report here (JSON).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON, not tables.")
def replay(since: str | None, until: str | None, from_offsets: tuple[str, ...],
           to_offsets: tuple[str, ...], students: tuple[str, ...], events_out: Path | None,
           totals_out: Path | None, report_out: Path | None, as_json: bool) -> None:
    """Replay the XP topic over a range without a consumer group; audit it against the ledger
    and xp_totals. Exits 1 when a difference is found."""
    import orjson
    from rich.console import Console
    from rich.progress import Progress

    from streams.audit.ranges import RangeSpec, parse_instant, parse_offsets
    from streams.audit.replay import EventWriter, Replay, render, write_totals

    _quiet_clients()
    settings = _settings()
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


class _Duration(click.ParamType):
    """A click parameter: ``90s``, ``30m``, ``24h``, ``7d`` or plain seconds, as float seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        from streams.audit.ranges import parse_duration

        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@main.command("reconcile")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--wait", "wait_s", type=_Duration(), default="60s", show_default=True,
              help="How long to wait for the pipeline to catch up before re-checking.")
@click.option("--every", type=_Duration(), default=None,
              help="Run again at this interval, exporting the mismatch count on XP_METRICS_PORT.")
def reconcile_cmd(as_json: bool, wait_s: float, every: float | None) -> None:
    """Compare xp_totals with SUM(xp_events.delta) and count(*) per student, re-checking what
    events in flight explain. Exits 1 on a confirmed mismatch, 3 when the pipeline did not catch
    up in time to confirm."""
    import orjson
    from rich.console import Console

    from streams.audit.reconcile import reconcile, render

    _quiet_clients()
    settings = _settings()
    if every is None:
        result = reconcile(settings, wait_s)
        if as_json:
            click.echo(orjson.dumps(result.to_dict()).decode())
        else:
            render(result, Console())
        sys.exit(result.exit_code)
    _logging()
    from streams.audit.reconcile import run_every
    from streams.metrics import ReconcileMetrics

    metrics = ReconcileMetrics()
    metrics.serve(settings.metrics_port)
    _run_until_signal(lambda stop: run_every(settings, metrics, every, wait_s, stop))


@main.command("rebuild-totals")
@click.option("--user", "users", multiple=True, help="Only this student (repeatable).")
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

    settings = _settings()
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
        click.option("--source-url", envvar="XP_LEGACY_DATABASE_URL",
                     help="PostgreSQL URL of the legacy table [env XP_LEGACY_DATABASE_URL; "
                          "default: DATABASE_URL]."),
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
@click.option("--user", "users", multiple=True, help="Only this student (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print what would be published; write nothing.")
@click.option("--reset", is_flag=True,
              help="Reverse earlier backfill events of this source, then import again.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation of --reset.")
@click.option("--wait", "wait_s", type=_Duration(), default="120s", show_default=True,
              help="With --reset: how long to wait for the pipeline to catch up first.")
def backfill(users: tuple[str, ...], dry_run: bool, reset: bool, yes: bool, wait_s: float,
             **legacy: Any) -> None:
    """Import legacy balances as opening-balance backfill events (deterministic ids: a re-run
    never double counts)."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from streams.audit import backfill as bf

    _quiet_clients()
    settings = _settings()
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
@click.option("--user", "users", multiple=True, help="Only this student (repeatable).")
@click.option("--active-since", help="Only students whose legacy last play is at or after "
              "this (RFC 3339 or a duration ago: 30d).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compare_xp(users: tuple[str, ...], active_since: str | None, as_json: bool,
               **legacy: Any) -> None:
    """The rollout's comparison report (docs/design.md, Rollout): legacy value vs ledger sum
    per student; expected delta 0. Exits 1 when a student's delta is not 0."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    from streams.audit.compare import compare
    from streams.audit.ranges import parse_instant

    settings = _settings()
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


@main.command("migrate")
@click.option("--rollback", "to_version", type=click.IntRange(0),
              help="Undo the applied migrations newer than this version (0: all), newest "
                   "first, with sql/rollback/. Drops their tables and data.")
@click.option("--yes", is_flag=True, help="Do not ask before --rollback.")
def migrate_cmd(to_version: int | None, yes: bool) -> None:
    """Apply pending SQL migrations from sql/ (each once, checksummed), or roll back."""
    from streams.db.migrate import migrate, rollback

    url = _settings().database_url
    if to_version is None:
        applied = migrate(url)
        click.echo("applied: " + ", ".join(applied) if applied else "database is up to date")
        return
    if not yes:
        click.confirm(f"Undo every migration newer than V{to_version:03d} in "
                      f"{redact_url(url)}? Their tables and data are dropped", abort=True)
    undone = rollback(url, to_version)
    click.echo("rolled back: " + ", ".join(undone) if undone
               else f"nothing newer than V{to_version:03d} is applied")


@main.command("create-topics")
def create_topics() -> None:
    """Create the pipeline's topics if missing: input, DLQ, table changelogs."""
    from streams import kafka

    s = _settings()
    asyncio.run(kafka.pipeline_topics(s))
    click.echo(f"topics ready for {s.xp_topic} ({s.topic_partitions} partitions)")


@main.command()
@click.option("--events", default=200_000, show_default=True, type=click.IntRange(1000))
@click.option("--students", default=10_000, show_default=True, type=click.IntRange(1))
@click.option("--partitions", default=12, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--keep", is_flag=True, help="Keep the stack's directory (logs) afterwards.")
def demo(events: int, students: int, partitions: int, seed: int, keep: bool) -> None:
    """Run the whole pipeline on the embedded local stack and prove its numbers."""
    from streams.lab.demo import run_demo

    _logging("WARNING")
    sys.exit(run_demo(events=events, students=students, partitions=partitions, seed=seed,
                      keep=keep))


@main.command()
@click.option("--events", default=200_000, show_default=True, type=click.IntRange(1000),
              help="Records of the workload (duplicates and invalid ones included).")
@click.option("--students", default=10_000, show_default=True, type=click.IntRange(1))
@click.option("--partitions", default=8, show_default=True, type=click.IntRange(1),
              help="Partitions of the bench topics.")
@click.option("--rate", default=2000, show_default=True, type=click.IntRange(1),
              help="Offered rate of the latency stage (events/s).")
@click.option("--latency-seconds", default=20.0, show_default=True,
              type=click.FloatRange(1), help="Duration of the latency stage (seconds).")
@click.option("--batch", default=50, show_default=True, type=click.IntRange(2, 500),
              help="Events per record in the batched-records stages.")
@click.option("--local", is_flag=True,
              help="Run on a throwaway local stack instead of the configured servers.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the figures to this file as JSON.")
@click.option("--profile", "profile_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Record py-spy profiles (folded stacks) of each process here.")
@click.option("--skip", multiple=True,
              type=click.Choice(["baselines", "worker", "sink", "batched", "e2e"]),
              help="Leave a stage out (repeatable); the limits always run.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 8),
              help="Fold worker processes in the worker and end-to-end stages.")
def bench(events: int, students: int, partitions: int, rate: int, latency_seconds: float,
          batch: int, local: bool, json_out: Path | None, profile_dir: Path | None,
          skip: tuple[str, ...], workers: int) -> None:
    """Measure every stage against its limits in one run and print one table."""
    from rich.console import Console

    from streams.dev.procs import interrupt_on_sigterm
    from streams.lab.bench import (
        STAGES,
        Bench,
        Report,
        default_workdir,
        profile_summary,
        render,
        run_local,
    )
    from streams.lab.loadgen import LoadSpec

    _logging("WARNING")
    interrupt_on_sigterm()
    console = Console(width=None if sys.stdout.isatty() else 150)
    workdir = default_workdir()
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    spec = LoadSpec(events=events, students=students)

    def run(settings: Settings) -> Report:
        settings = settings.with_(topic_partitions=partitions)
        return Bench(settings, spec, workdir, rate, latency_seconds, profile_dir,
                     STAGES - set(skip), batch, say=console.print, workers=workers).run()

    console.print(f"bench logs in {workdir}")
    try:
        report = run_local(run, partitions) if local else run(_settings())
    except KeyboardInterrupt:
        console.print(f"interrupted; logs kept in {workdir}")
        sys.exit(130)
    shutil.rmtree(workdir, ignore_errors=True)  # logs and table stores: kept only on failure
    console.print(render(report))
    for path in sorted(profile_dir.glob("*.folded")) if profile_dir is not None else []:
        console.print(f"profile {path} (share of the main thread's samples):")
        for share, frame in profile_summary(path):
            console.print(f"  {share:6.1%}  {frame}")
    if json_out is not None:
        json_out.write_bytes(report.to_json())


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from streams.audit.ranges import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _faults(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    from streams.lab.chaos import DEFAULT_FAULTS, FAULTS

    if value is None:
        return DEFAULT_FAULTS
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in FAULTS]
    if unknown or not names:
        raise click.BadParameter(f"unknown fault {', '.join(unknown) or '(none given)'}; "
                                 f"known: {', '.join(FAULTS)}")
    return names


@main.command()
@click.option("--events", default=500_000, show_default=True, type=click.IntRange(1000),
              help="Records of one workload (duplicates, conflicts, invalid ones included).")
@click.option("--students", default=10_000, show_default=True, type=click.IntRange(1))
@click.option("--partitions", default=8, show_default=True, type=click.IntRange(1),
              help="Partitions of the chaos topics.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 8),
              help="Fold worker processes in the group at the start.")
@click.option("--rate", default=3000, show_default=True, type=click.IntRange(1),
              help="Records published per second.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 500),
              help="Events per record (1: one event a record; more: batched records).")
@click.option("--seed", default=1, show_default=True, type=int,
              help="Seeds the workload and the fault schedule.")
@click.option("--faults", "faults", callback=_faults,
              help="Comma-separated faults to cycle through [default: all but broker-restart "
                   "and broker-kill].")
@click.option("--fault-interval", default=20.0, show_default=True, type=click.FloatRange(0.5),
              help="Seconds between faults (jittered +-25%).")
@click.option("--duration", callback=_duration,
              help="Soak: publish workloads one after another for this long (90s, 30m, 2h).")
@click.option("--outage-seconds", default=30.0, show_default=True, type=click.FloatRange(1),
              help="How long pg-outage keeps PostgreSQL down.")
@click.option("--storm-repeats", default=100, show_default=True, type=click.IntRange(1),
              help="How often duplicate-storm resends its 1,000 records.")
@click.option("--poison", default=2000, show_default=True, type=click.IntRange(10),
              help="Invalid records of one poison-burst.")
@click.option("--broker-restart-command",
              help="Shell command that restarts a durable broker (for the broker-restart fault).")
@click.option("--local", is_flag=True,
              help="Run on a throwaway local stack (needed for pg-outage and broker-restart).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report to this file as JSON.")
def chaos(events: int, students: int, partitions: int, workers: int, rate: int, batch: int,
          seed: int, faults: tuple[str, ...], fault_interval: float, duration: float | None,
          outage_seconds: float, storm_repeats: int, poison: int,
          broker_restart_command: str | None, local: bool, json_out: Path | None) -> None:
    """Run a workload through the pipeline under faults and check the guarantees (exit 0: all
    hold; 1: a guarantee broke; 2: the broker lost acknowledged records, not checkable)."""
    from rich.console import Console

    from streams.dev.procs import interrupt_on_sigterm
    from streams.dev.stack import LocalStack, default_base_dir
    from streams.lab.chaos import Chaos, ChaosReport, render
    from streams.lab.loadgen import LoadSpec

    _logging("WARNING")
    _quiet_clients()  # a broker fault would fill the report with the publisher's retries
    interrupt_on_sigterm()
    console = Console(width=None if sys.stdout.isatty() else 150)
    workdir = Path(tempfile.mkdtemp(prefix="xp-chaos-"))
    spec = LoadSpec(events=events, students=students, seed=seed)

    def run(settings: Settings, stack: LocalStack | None) -> ChaosReport:
        return Chaos(settings.with_(topic_partitions=partitions), spec, workdir, faults,
                     fault_interval, workers, rate, duration, outage_seconds, storm_repeats,
                     poison, stack, batch, broker_restart_command, say=console.print).run()

    console.print(f"chaos logs in {workdir}")
    try:
        if local:
            stack = LocalStack(default_base_dir(),
                               settings=Settings(topic_partitions=partitions))
            try:
                report = run(stack.start(), stack)
            finally:
                stack.stop()
        else:
            report = run(_settings(), None)
    except KeyboardInterrupt:
        console.print(f"interrupted; logs kept in {workdir}")
        sys.exit(130)
    console.print(render(report))
    if json_out is not None:
        json_out.write_bytes(report.to_json())
    if report.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        console.print(f"logs kept in {workdir}")
    sys.exit(0 if report.ok else 2 if report.broker_limit else 1)


@main.group()
def dev() -> None:
    """Start and stop the local stack (Tansu + PostgreSQL) for development."""


@dev.command("up")
@click.option("--dir", "base_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(tempfile.gettempdir()) / "xp-streams-dev", show_default=True)
def dev_up(base_dir: Path) -> None:
    """Start the stack in the background and print the settings to export."""
    from streams.dev.devstack import up

    up(base_dir.resolve())


@dev.command("down")
@click.option("--dir", "base_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(tempfile.gettempdir()) / "xp-streams-dev", show_default=True)
def dev_down(base_dir: Path) -> None:
    """Stop the stack started by ``streams dev up``."""
    from streams.dev.devstack import down

    down(base_dir.resolve())
