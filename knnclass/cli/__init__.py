"""The `knnclass` command: a thin click layer over the library."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import KnnclassError

__all__ = ["cli", "main"]


class _Group(click.Group):
    """Maps library errors to one line on stderr and a non-zero exit: no tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KnnclassError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(1)
        except OSError as e:  # a path the command could not read or write (missing dir, permissions)
            where = f": {e.filename}" if e.filename else ""
            click.echo(f"error: {e.strerror or e}{where}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="knnclass")
def cli() -> None:
    """Nearest-neighbour ticket classifier: ONNX encoder + Qdrant, with evidence."""


def _register() -> None:
    from . import core, data, encoder, jobs, reports, serve

    for mod in (core, encoder, serve, jobs, reports, data):
        for cmd in mod.COMMANDS:
            cli.add_command(cmd)


_register()


def main() -> None:
    cli(prog_name="knnclass")
