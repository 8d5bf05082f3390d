"""``streams dev up`` / ``streams dev down``: the local stack as background servers."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import click
import orjson

from streams.dev.postgres import PostgresCluster
from streams.dev.procs import stop_pid
from streams.dev.stack import LocalStack
from streams.settings import to_env, variable


def up(base_dir: Path) -> None:
    """Start the broker (``XP_LOCAL_BROKER``) and PostgreSQL under ``base_dir`` and leave them
    running.

    Raises:
        click.ClickException: a stack already runs there.
    """
    state = base_dir / "stack.json"
    if state.exists():
        raise click.ClickException(f"a stack is already up in {base_dir}: streams dev down first")
    stack = LocalStack(base_dir)
    settings = stack.start(detach=True)
    stack.create_topics()
    assert stack.broker is not None and stack.postgres is not None
    state.write_bytes(orjson.dumps({
        "broker": stack.broker_kind, "broker_pids": stack.broker.pids(),
        "postgres_dir": str(stack.postgres.base_dir),
        "postgres_port": stack.postgres.port,
    }))
    click.echo(f"stack up in {base_dir}. Export these to use it:")
    env = to_env(settings)
    for field in ("kafka_bootstrap_servers", "database_url", "data_dir"):
        name = variable(field).name
        click.echo(f"export {name}={env[name]}")


def down(base_dir: Path) -> None:
    """Stop the stack started by :func:`up` in ``base_dir`` and remove its files."""
    state = base_dir / "stack.json"
    if not state.exists():
        raise click.ClickException(f"no stack is up in {base_dir}")
    info = orjson.loads(state.read_bytes())
    pids = info["broker_pids"]
    for pid in pids:  # all at once: Kafka nodes shut down together keep their quorum
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in pids:
        stop_pid(pid, 30)
    PostgresCluster(Path(info["postgres_dir"]), info["postgres_port"]).stop()
    LocalStack(base_dir).stop(remove=True)
    click.echo(f"stack in {base_dir} stopped")
