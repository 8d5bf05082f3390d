"""Operating the pipeline: ``streams monitor``, ``status``, ``publish``, ``migrate``,
``create-topics``, ``settings``, ``dlq``, ``offsets``."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

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
from streams.settings import Settings, redact_url

if TYPE_CHECKING:
    from streams.audit.dlq import DeadLetter


@main.command()
@click.option("--interval", default="5s", show_default=True, type=Duration(),
              help="Between lag samples (5s, 1m; plain seconds too).")
@click.option("--reconcile-every", default="60s", show_default=True, type=Duration(),
              help="Between reconciliations (run only when every group is at lag 0).")
def monitor(interval: float, reconcile_every: float) -> None:
    """Export consumer lag (from the broker) and reconciliation results as Prometheus metrics."""
    from streams.health import Health, serve
    from streams.metrics import MonitorMetrics
    from streams.monitor import Monitor

    setup_logging()
    settings = load_settings()
    metrics, health = MonitorMetrics(), Health()
    monitor = Monitor(settings, metrics, interval, reconcile_every)
    health.set_readiness(monitor.readiness)
    serve(settings.metrics_port, metrics.registry, health)
    run_until_signal(monitor.run, health)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--partitions", is_flag=True, help="Also a table per stage with its partitions.")
@click.option("--watch", type=Duration(), default=None, metavar="DURATION",
              help="Refresh every DURATION (5s, 1m; plain seconds too) until Ctrl-C.")
def status(as_json: bool, watch: float | None, partitions: bool) -> None:
    """Show each stage's lag, throughput and last commit, the DLQ by reason and the
    reconciliation (--partitions: per partition too). Exit 1 with one line when the broker
    or the database cannot be reached."""
    import orjson
    from rich.console import Console

    from streams.status import Status, collect, render

    quiet_clients()
    settings = load_settings()
    console = Console(width=None if sys.stdout.isatty() else 160)

    def show(snapshot: Status) -> None:
        if as_json:
            click.echo(orjson.dumps(snapshot.to_json(), option=orjson.OPT_INDENT_2).decode())
        else:
            render(snapshot, console, partitions)

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

    quiet_clients()
    count = asyncio.run(publish_lines(load_settings(), iter(source), topic))
    click.echo(f"published {count} records")


@main.command("migrate")
@click.option("--rollback", "to_version", type=click.IntRange(0),
              help="Undo the applied migrations newer than this version (0: all), newest "
                   "first, with sql/rollback/. Drops their tables and data.")
@click.option("--yes", is_flag=True, help="Do not ask before --rollback.")
def migrate_cmd(to_version: int | None, yes: bool) -> None:
    """Apply pending SQL migrations from sql/ (each once, checksummed), or roll back."""
    from streams.db.migrate import migrate, rollback

    url = load_settings().database_url
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

    s = load_settings()
    asyncio.run(kafka.pipeline_topics(s))
    click.echo(f"topics ready for {s.xp_topic} ({s.topic_partitions} partitions)")


@main.command("settings")
@click.option("--markdown", is_flag=True,
              help="Print the table of every variable (README.md's Settings) instead.")
@click.option("--json", "as_json", is_flag=True, help="The effective settings as JSON.")
def settings_cmd(markdown: bool, as_json: bool) -> None:
    """Show the effective settings (from the environment; passwords redacted), one variable
    per line."""
    import orjson

    from streams.settings import settings_table, variable

    if markdown:
        click.echo(settings_table(), nl=False)
        return
    described = load_settings().describe()
    if as_json:
        click.echo(orjson.dumps(described, option=orjson.OPT_INDENT_2).decode())
        return
    for name, value in described.items():
        click.echo(f"{variable(name).name}={'' if value is None else value}")


@main.group()
def dlq() -> None:
    """Look into the dead-letter queues and send fixed records back (list, show, replay)."""


_DLQ_CHOICE = click.Choice(["xp", "actions", "claims", "sinks"])


def _selection_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options choosing DLQ records (``show``, ``replay``)."""
    options = [
        click.option("--topic", "which", type=_DLQ_CHOICE, default="xp", show_default=True,
                     help="Which DLQ: of the XP, action or claims topic, or the sinks'."),
        click.option("--reason", help="Only records dead-lettered for this reason."),
        click.option("--partition", type=click.IntRange(0), help="Only this source partition."),
        click.option("--from-offset", type=click.IntRange(0),
                     help="Only source offsets from this one (inclusive)."),
        click.option("--to-offset", type=click.IntRange(0),
                     help="Only source offsets up to this one (inclusive)."),
        click.option("--since", type=Duration(),
                     help="Only records dead-lettered within this long (90s, 30m, 24h, 7d)."),
        click.option("--limit", type=click.IntRange(1), help="At most this many records."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _read_selected(which: str, reason: str | None, partition: int | None,
                   from_offset: int | None, to_offset: int | None, since: float | None,
                   limit: int | None) -> tuple[Settings, list[DeadLetter]]:
    from streams.audit.dlq import DLQ_TOPICS, Selection, read_dlq

    s = load_settings()
    since_ms = None if since is None else int((time.time() - since) * 1000)
    selection = Selection(reason, partition, from_offset, to_offset, since_ms, limit)
    topic = getattr(s, DLQ_TOPICS[which])
    with progress_bar(f"reading {topic}") as step:
        return s, asyncio.run(read_dlq(s, topic, selection, step))


@dlq.command("list")
@click.option("--topic", "which", type=click.Choice(["all", "xp", "actions", "claims", "sinks"]),
              default="all", show_default=True, help="Which DLQ.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout.")
def dlq_list(which: str, as_json: bool) -> None:
    """Count the dead-lettered source records by DLQ topic, reason, source partition and hour
    (UTC) they were dead-lettered."""
    import orjson

    from streams.audit.dlq import DLQ_TOPICS, read_dlq, summarize

    s = load_settings()
    letters = []
    for name, attr in DLQ_TOPICS.items():
        if which in ("all", name):
            with progress_bar(f"reading {getattr(s, attr)}") as step:
                letters += asyncio.run(read_dlq(s, getattr(s, attr), on_progress=step))
    rows = summarize(letters)
    if as_json:
        click.echo(orjson.dumps([dict(zip(("topic", "reason", "source_partition", "hour",
                                           "records"), r, strict=True)) for r in rows]).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("DLQ topic", "reason", "source partition", "hour (UTC)", "records",
                  title=f"{len(letters):,} dead-lettered records")
    for topic, reason, partition, hour, n in rows:
        table.add_row(topic, reason, str(partition), hour, f"{n:,}")
    Console().print(table)


@dlq.command("show")
@_selection_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array to stdout.")
def dlq_show(which: str, reason: str | None, partition: int | None, from_offset: int | None,
             to_offset: int | None, since: float | None, limit: int | None,
             as_json: bool) -> None:
    """Show DLQ records: where each came from, why, its headers and its payload decoded."""
    import orjson

    _, letters = _read_selected(which, reason, partition, from_offset, to_offset, since, limit)
    if as_json:
        click.echo(orjson.dumps([d.to_dict() for d in letters]).decode())
        return
    for d in letters:
        shown = d.to_dict()
        topic, p, offset = d.source
        click.echo(f"{topic}/{p}@{offset}  {d.reason}  (DLQ {d.topic}/{d.partition}@"
                   f"{d.offset}, {shown['dead_lettered_at']})")
        click.echo(f"  detail: {d.headers.get('detail', '')}")
        click.echo(f"  key: {shown['key']}")
        click.echo(f"  value: {orjson.dumps(shown['value']).decode()[:2000]}")
    click.echo(f"{len(letters):,} records", err=True)


@dlq.command("replay")
@_selection_options
@click.option("--payload", type=click.File("rb"),
              help="Corrected values, one JSON document per line, one per selected record in "
                   "the order `show` lists them.")
@click.option("--dry-run", is_flag=True, help="Say what would be sent; send nothing.")
def dlq_replay(which: str, reason: str | None, partition: int | None, from_offset: int | None,
               to_offset: int | None, since: float | None, limit: int | None,
               payload: click.utils.LazyFile | None, dry_run: bool) -> None:
    """Send the selected DLQ records back to their source topic and partition, with their
    original key and bytes or corrected values. Safe to repeat: the pipeline dedupes by event
    id (a record that is still invalid goes to the DLQ again)."""
    import orjson

    from streams.audit.dlq import replay

    s, letters = _read_selected(which, reason, partition, from_offset, to_offset, since, limit)
    payloads = None
    if payload is not None:
        try:
            payloads = [orjson.dumps(orjson.loads(line)) for line in payload if line.strip()]
        except orjson.JSONDecodeError as exc:
            raise click.ClickException(f"--payload: not JSON lines ({exc})") from None
        if len(payloads) != len(letters):
            raise click.ClickException(f"--payload has {len(payloads)} values for "
                                       f"{len(letters)} selected records")
    result = asyncio.run(replay(s, letters, payloads, dry_run))
    verb = "would send" if dry_run else "sent"
    total = sum(result.sent.values())
    where = ", ".join(f"{t}/{p}: {n:,}" for (t, p), n in sorted(result.sent.items()))
    click.echo(f"{verb} {total:,} record{'' if total == 1 else 's'} "
               + (f"({where})" if where else "(nothing selected)"))
    if result.not_replayable:
        click.echo(f"{len(result.not_replayable):,} records not replayable (cut to fit the DLQ "
                   "or of unknown source; give corrected values with --payload): "
                   f"{result.not_replayable[:5]}", err=True)
        sys.exit(1)


@main.group()
def offsets() -> None:
    """See and move the pipeline's offsets (show, reset)."""


@offsets.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array to stdout.")
def offsets_show(as_json: bool) -> None:
    """Every stage's offsets per partition: log start and end, the group's Kafka commit, and
    what the stage resumes from (a sink's offsets in PostgreSQL, the worker's positions)."""
    import orjson

    from streams.offsets import offsets_table

    rows = asyncio.run(offsets_table(load_settings()))
    if as_json:
        click.echo(orjson.dumps([r.to_dict() for r in rows]).decode())
        return
    from rich.console import Console
    from rich.table import Table

    def shown(n: int | None) -> str:
        return "-" if n is None else f"{n:,}"

    table = Table("stage", "group", "topic", "partition", "log start", "end", "committed",
                  "stored / position", "lag")
    for r in rows:
        table.add_row(r.stage, r.group, r.topic, str(r.partition), shown(r.log_start),
                      shown(r.end), shown(r.committed), shown(r.stored), shown(r.lag))
    Console().print(table)


@offsets.command("reset")
@click.argument("sink")
@click.option("--to-earliest", "to", flag_value="earliest", help="Each partition's log start.")
@click.option("--to-latest", "to", flag_value="latest", help="Each partition's end.")
@click.option("--to-datetime", "at", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z",
                                                          "%Y-%m-%dT%H:%M:%S"]),
              help="The first record at or after this time (ISO 8601; UTC without offset).")
@click.option("--to-offset", type=click.IntRange(0), help="This offset (within the log).")
@click.option("--partition", "partitions", type=click.IntRange(0), multiple=True,
              help="Only this partition (repeatable; default every one).")
@click.option("--dry-run", is_flag=True, help="Show the change; write nothing.")
def offsets_reset(sink: str, to: str | None, at: datetime | None, to_offset: int | None,
                  partitions: tuple[int, ...], dry_run: bool) -> None:
    """Move the stored offsets of SINK (a sink's command: sink, totals-writer, ...) while its
    group has no live member: it then reads again (or skips) from there. Re-reading is safe:
    the sinks are idempotent."""
    from streams.offsets import apply_reset, plan_reset

    chosen = [c for c in (to, at, to_offset) if c is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --to-earliest, --to-latest, "
                               "--to-datetime, --to-offset")
    value: float | int | None = None
    if at is not None:
        to, value = "time", (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    elif to_offset is not None:
        to, value = "offset", to_offset
    s = load_settings()
    assert to is not None
    plan = asyncio.run(plan_reset(s, sink, to, value, list(partitions) or None))
    for p, after in plan.after.items():
        before = plan.before[p]
        click.echo(f"{plan.stage.topic}/{p}: {'-' if before is None else f'{before:,}'} -> "
                   f"{after:,}")
    if dry_run:
        click.echo(f"dry run: {plan.stage.group} unchanged")
        return
    asyncio.run(apply_reset(s, plan))
    click.echo(f"{plan.stage.group}: {len(plan.after)} partition(s) reset; start the "
               f"{plan.stage.name} to read from there")
