"""serve: the HTTP service (see knnclass.service)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
