"""CLI options for label sets, metadata columns and filters (issue 16)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..data import read_label_map
from ..errors import InputError
from ..store.base import Where

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "label_cols_option",
    "label_maps_option",
    "label_set_option",
    "meta_col_option",
    "parse_label_maps",
    "parse_where",
    "where_option",
]


def label_cols_option(f: F) -> F:
    return click.option(
        "--label-col",
        "label_cols",
        multiple=True,
        help="Column holding a label; repeat for several label sets (the first is the primary one; "
        "a row may leave the others empty). Default: the collection's, else 'category'.",
    )(f)


def label_maps_option(f: F) -> F:
    return click.option(
        "--label-map",
        "label_maps",
        multiple=True,
        metavar="[NAME=]FILE",
        help="Two-column CSV mapping file labels to the labels to use (e.g. category -> urgency); "
        "NAME=FILE maps label set NAME, FILE alone the primary set. Repeatable.",
    )(f)


def meta_col_option(f: F) -> F:
    return click.option(
        "--meta-col",
        "meta_cols",
        multiple=True,
        help="Column stored as filterable metadata (kind inferred: number, datetime, else keyword). Repeatable.",
    )(f)


def where_option(f: F) -> F:
    return click.option(
        "--where",
        "where",
        multiple=True,
        metavar="COL=VALUE|COL>=VALUE",
        help="Only neighbours whose metadata match vote: COL=VALUE, or a range with >, >=, <, <= "
        "(numbers, dates). Repeat to require several (AND).",
    )(f)


def label_set_option(f: F) -> F:
    return click.option(
        "--label-set", default=None, help="The label set to work on (default: the collection's primary one)."
    )(f)


def parse_where(exprs: tuple[str, ...]) -> Where | None:
    return Where.parse(exprs) if exprs else None


def parse_label_maps(values: tuple[str, ...], label_cols: list[str]) -> dict[str, dict[str, str]]:
    """`--label-map` values as {label set: mapping}; FILE alone maps the primary set."""
    out: dict[str, dict[str, str]] = {}
    for v in values:
        name, sep, file = v.partition("=")
        if not sep or Path(v).exists():
            name, file = label_cols[0], v
        if not Path(file).is_file():
            raise InputError(f"--label-map {v!r}: no such file {file!r}")
        if name in out:
            raise InputError(f"--label-map: two maps for label set {name!r}")
        out[name] = read_label_map(Path(file))
    return out
