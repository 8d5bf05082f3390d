"""The ``streams`` command group and what every command shares: settings, logging, signals,
one-line errors, the duration parameter."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from streams.errors import StreamsError
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.health import Health


def load_settings() -> Settings:
    """Settings from the environment; a bad one is a one-line usage error."""
    try:
        return Settings.from_env()
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from None


def setup_logging(default_level: str | None = None) -> None:
    """Log to stderr as ``XP_LOG_LEVEL`` and ``XP_LOG_FORMAT`` say (:mod:`streams.logs`);
    ``default_level`` when ``XP_LOG_LEVEL`` is unset. A bad setting is a one-line error."""
    from streams import logs

    try:
        settings = Settings.from_env(warn_unknown=False)  # load_settings() warns once
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from None
    logs.setup(settings, default_level)


def quiet_clients() -> None:
    """Short commands report failures in one line themselves; the clients' logs would repeat
    them on stderr."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]],
                     health: Health | None = None) -> None:
    """Run coroutine function ``main(stop_event)`` until it returns; SIGTERM/SIGINT set stop.
    ``health`` (its ``/healthz``) watches the event loop."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if health is not None:
            health.watch(loop)

        def on_signal() -> None:
            stop.set()
            # Closing the loop would put SIGTERM back to its default (terminate): a repeated
            # SIGTERM in that moment ended a graceful stop with status -15.
            loop.remove_signal_handler(signal.SIGTERM)
            ignore_sigterm_from_now_on()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
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


HARNESS = ("streams.lab", "streams.dev")
"""The packages of the harness (the lab and the local stack): a source checkout has them; the
image leaves them out (deploy/Containerfile), and their commands then say so in one line."""


SECTIONS = (
    ("Pipeline processes", ("worker", "sink", "totals-writer", "action-sink", "progress-writer",
                            "award-sink", "grant-writer", "rules-sink")),
    ("Operations", ("status", "monitor", "dlq", "offsets", "policy", "claim", "publish",
                    "migrate", "create-topics", "settings")),
    ("Audits", ("replay", "replay-grants", "reconcile", "rebuild-totals", "audit-changelogs",
                "verify", "backfill", "backfill-vectors", "compare-xp")),
    ("Harness", ("lab", "dev")),
)
"""``streams --help`` by job: each command under one heading (a test checks every visible
command has one)."""


def hidden_alias(command: click.Command, new: str) -> click.Command:
    """A hidden copy of ``command`` under its old top-level name (kept for one release; its
    help names ``streams <new>``)."""
    alias = copy.copy(command)
    alias.hidden = True
    alias.help = f"Old name of `streams {new}`. {command.help or ''}"
    return alias


class _Cli(click.Group):
    """click's group with one-line errors and its commands listed by job (:data:`SECTIONS`)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The visible commands under their :data:`SECTIONS` heading (others last)."""
        visible = {name: cmd for name in self.list_commands(ctx)
                   if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden}
        placed: set[str] = set()
        limit = formatter.width - 6 - max((len(n) for n in visible), default=0)
        for heading, names in (*SECTIONS, ("Other", tuple(visible))):
            rows = [(n, visible[n].get_short_help_str(limit)) for n in names
                    if n in visible and n not in placed]
            placed.update(n for n, _ in rows)
            if rows:
                with formatter.section(heading):
                    formatter.write_dl(rows)

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
        """Run the command; what could not be reached becomes one line (exit 1)."""
        try:
            return super().invoke(ctx)
        except StreamsError as exc:
            raise click.ClickException(str(exc)) from None
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith(HARNESS):
                raise
            raise click.ClickException(
                f"{ctx.invoked_subcommand} is part of the harness ({exc.name}), which this "
                "installation leaves out (the image ships the pipeline only): run it from a "
                "source checkout") from None
        except Exception as exc:  # noqa: BLE001 - mapped to one line or re-raised
            line = unreachable(exc)
            if line is None:
                raise
            raise click.ClickException(line) from None


def unreachable(exc: BaseException) -> str | None:
    """One line naming what ``exc`` says could not be reached (a Kafka broker, PostgreSQL, a
    port to listen on, a file), None for any other error (a bug: its traceback is shown).

    The commands' own code maps what it expects; this is the net under every command, so that
    an unreachable server never prints a traceback.
    """
    import psycopg
    from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

    from streams.settings import redact_url

    settings = None
    try:
        settings = Settings.from_env()
    except StreamsError:
        pass
    brokers = settings.kafka_bootstrap_servers if settings is not None else "?"
    if isinstance(exc, (KafkaConnectionError, KafkaTimeoutError)):
        return f"cannot reach the Kafka brokers at {brokers}: {_first_line(exc)}"
    if isinstance(exc, KafkaError):
        return f"Kafka at {brokers} refused the request: {_first_line(exc)}"
    if isinstance(exc, psycopg.OperationalError):
        url = redact_url(settings.database_url) if settings is not None else "?"
        return f"cannot reach PostgreSQL at {url}: {_first_line(exc)}"
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename or _first_line(exc)}"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"address already in use: {_first_line(exc)}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@click.group(cls=_Cli)
@click.version_option(package_name="xp-streams")
def main() -> None:
    """XP Streams: dedupe and fold XP events into totals, and keep the ledger in PostgreSQL."""

class Duration(click.ParamType):
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



@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr for long work, off when stderr is not a terminal; yields
    ``step(done, total=None)`` to call as the work advances (records, rows)."""
    from rich.console import Console
    from rich.progress import Progress

    err = Console(stderr=True)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(description, total=None)

        def step(done: int, total: int | None = None) -> None:
            progress.update(task, completed=done, total=total)

        yield step
