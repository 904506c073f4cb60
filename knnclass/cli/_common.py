"""Shared CLI plumbing: common options, opening the classifier, output helpers."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..classifier import Classifier
from ..classifier import open_classifier as library_open_classifier
from ..data import TextSource, read_label_map
from ..errors import InputError
from ..settings import Settings, env
from ..store.remote import RemoteStore

F = TypeVar("F", bound=Callable[..., Any])

INPUT_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
"""An existing file to read (tickets, a label map)."""

__all__ = [
    "INPUT_FILE",
    "ProgressBar",
    "emit_json",
    "encoder_option",
    "label_col_option",
    "label_map_option",
    "load_label_map",
    "open_classifier",
    "settings_from",
    "store_options",
    "text_col_option",
    "text_source",
    "text_source_options",
]


def store_options(f: F) -> F:
    """--store, --collection, --wait and the server options, with env fallbacks."""
    f = click.option(
        "--wait",
        envvar="KNNCLASS_WAIT",
        type=click.FloatRange(0, 86400),
        default=0.0,
        metavar="SECONDS",
        help="When another command holds the embedded store, wait up to this long for it "
        "(a running `knnclass serve` needs no wait: commands go through it).",
    )(f)
    f = click.option(
        "--qdrant-api-key", envvar="KNNCLASS_QDRANT_API_KEY", default=None, help="API key for --qdrant-url."
    )(f)
    f = click.option(
        "--qdrant-url",
        envvar="KNNCLASS_QDRANT_URL",
        default=None,
        help="Use a Qdrant server/cluster at this URL instead of the embedded store.",
    )(f)
    f = click.option(
        "--collection",
        envvar="KNNCLASS_COLLECTION",
        default="tickets",
        show_default=True,
        help="Collection name (env KNNCLASS_COLLECTION).",
    )(f)
    f = click.option(
        "--store",
        envvar="KNNCLASS_STORE",
        default="./knnclass-data",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Embedded store directory (env KNNCLASS_STORE).",
    )(f)
    return f


def encoder_option(f: F) -> F:
    return click.option(
        "--encoder",
        "encoder_dir",
        envvar="KNNCLASS_ENCODER",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=None,
        help="Local sentence-transformers model dir or exported knnclass encoder dir "
        "(default: the collection's encoder; for a new collection all-MiniLM-L6-v2).",
    )(f)


def text_col_option(f: F) -> F:
    return click.option("--text-col", default="text", show_default=True, help="Column holding the ticket text.")(f)


def text_source_options(f: F) -> F:
    """--text-col (repeatable), --text-template and --delimiter: how a file's columns make the ticket text."""
    f = click.option("--delimiter", default=None, help="CSV field separator (default: sniffed; tab for .tsv).")(f)
    f = click.option(
        "--text-template",
        default=None,
        help='Compose the text from columns, e.g. "{subject}\\n\\n{body}" (instead of --text-col).',
    )(f)
    f = click.option(
        "--text-col",
        "text_cols",
        multiple=True,
        help="Column holding ticket text; repeat to join several (in order, blank line between). "
        "Default: the collection's, else 'text'.",
    )(f)
    return f


def text_source(text_cols: tuple[str, ...], text_template: str | None, stamped: TextSource | None = None) -> TextSource:
    """The composition asked for on the command line, else the collection's (`stamped`), else the 'text' column."""
    if text_cols and text_template:
        raise InputError("give --text-col or --text-template, not both")
    if text_template is not None:
        return TextSource((), text_template.replace("\\n", "\n").replace("\\t", "\t"))
    if text_cols:
        return TextSource(tuple(text_cols))
    return stamped or TextSource()


def label_col_option(f: F) -> F:
    return click.option("--label-col", default="category", show_default=True, help="Column holding the label.")(f)


def label_map_option(f: F) -> F:
    return click.option(
        "--label-map",
        type=INPUT_FILE,
        default=None,
        help="Two-column CSV mapping file labels to the labels to use (e.g. category -> urgency).",
    )(f)


def load_label_map(path: Path | None) -> dict[str, str] | None:
    return read_label_map(path) if path else None


def settings_from(
    store: Path,
    collection: str,
    qdrant_url: str | None = None,
    qdrant_api_key: str | None = None,
    encoder_dir: Path | None = None,
    wait: float = 0.0,
) -> Settings:
    """The command's settings: KNNCLASS_* read once, the store options (flags or their env) over them."""
    return Settings.from_env().with_(
        store=str(store),
        collection=collection,
        qdrant_url=qdrant_url,
        qdrant_api_key=qdrant_api_key,
        encoder=str(encoder_dir) if encoder_dir else None,
        wait_s=wait,
    )


def open_classifier(create: bool = False, **store_opts: Any) -> Classifier:
    """The collection the store options name. Through a running service (an embedded store it
    holds) this process lowers its CPU priority, so its heavy work never starves classify."""
    clf = library_open_classifier(settings_from(**store_opts), create=create)
    if isinstance(clf.store, RemoteStore):
        with contextlib.suppress(OSError):
            os.nice(10)
    return clf


class ProgressBar:
    """Progress on stderr, shown from the first update (an early error stays one line).

    When KNNCLASS_PROGRESS_FILE is set (a service's admin job runs this command), the progress
    is also written there as {"done": n, "total": N}, at most twice a second.
    """

    def __init__(self, total: int, desc: str, unit: str = "ticket"):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self._bar: Any = None
        self._file = env("PROGRESS_FILE")
        self._written = 0.0

    def update(self, n: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit=self.unit, desc=self.desc, file=sys.stderr, mininterval=0.5)
        self._bar.update(n)
        self.done += n
        if self._file and (time.monotonic() - self._written > 0.5 or self.done >= self.total):
            self._write()

    def _write(self) -> None:
        assert self._file is not None
        tmp = f"{self._file}.tmp"
        with contextlib.suppress(OSError):
            Path(tmp).write_text(json.dumps({"done": self.done, "total": self.total, "stage": self.desc}))
            os.replace(tmp, self._file)
        self._written = time.monotonic()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._file:
            self._write()


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))
