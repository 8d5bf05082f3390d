"""``streams dev up|down``: the local stack in the background (:mod:`streams.dev`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from streams.cli.base import (
    main,
)


@main.group()
def dev() -> None:
    """Start and stop the local stack (Apache Kafka + PostgreSQL) for development."""


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
