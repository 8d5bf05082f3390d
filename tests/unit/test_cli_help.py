"""``streams --help`` by job (streams.cli.base.SECTIONS), the old names kept as hidden
aliases, and the flags that agree across commands."""

from __future__ import annotations

import click
from click.testing import CliRunner

from streams.cli import main
from streams.cli.base import SECTIONS


def test_every_visible_command_is_under_one_heading() -> None:
    placed = [name for _, names in SECTIONS for name in names]
    visible = {n for n, c in main.commands.items() if not c.hidden}
    assert sorted(placed) == sorted(visible)
    out = CliRunner().invoke(main, ["--help"]).output
    for heading, names in SECTIONS:
        block = out[out.index(f"{heading}:"):]
        for name in names:
            assert f"  {name} " in block.split("\n\n")[0], (heading, name)


def test_the_harness_sits_under_lab_and_its_old_names_still_run() -> None:
    assert main.commands["lab"].commands.keys() >= {"bench", "chaos", "demo", "hostile",  # type: ignore[attr-defined]
                                                    "loadgen"}
    for old in ("bench", "chaos", "demo", "hostile", "loadgen"):
        assert main.commands[old].hidden
        result = CliRunner().invoke(main, [old, "--help"])
        assert result.exit_code == 0 and f"streams lab {old}" in result.output


def test_json_is_a_flag_and_files_are_output() -> None:
    """--json prints JSON to stdout wherever it is shown; a file written is --output."""
    def walk(group: click.Group) -> list[click.Command]:
        out: list[click.Command] = []
        for command in group.commands.values():
            if command.hidden:
                continue
            out += walk(command) if isinstance(command, click.Group) else [command]
        return out

    for command in walk(main):
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                if "--json" in param.opts:
                    assert param.is_flag, command.name
                if "--report" in param.opts:
                    raise AssertionError(f"{command.name}: --report is --output")
