"""snapshot, restore, copy, export-data, history, undo: keeping and moving the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ..errors import InputError
from ..store import open_store
from ._common import ProgressBar, emit_json, open_classifier, store_options


def _total(store: Any, name: str) -> int:
    return sum(store.count(store.ref(name, v)) for v in store.versions(name))


@click.command()
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Snapshot file to write (a zip)."
)
@click.option("--json", "as_json", is_flag=True)
@store_options
def snapshot(out: Path, as_json: bool, **so: Any) -> None:
    """Write a checksummed snapshot of the collection: every version with its meta and points
    (ids, texts, labels, vectors), the current pointer and the label history.

    Read-only. An embedded store must not be open in another process (a running `knnclass
    serve` holds it: snapshot its store while it is stopped, or serve from a Qdrant server,
    which can be snapshotted live). The file appears complete or not at all.
    """
    from ..jobs.backup import snapshot as take

    clf = open_classifier(create=False, **so)
    with clf.store:
        clf.ref()
        with ProgressBar(_total(clf.store, clf.collection), "snapshot") as bar:
            res = take(clf.store, clf.collection, out, progress=bar.update)
    if as_json:
        emit_json(res)
        return
    versions = ", ".join(f"{v} ({n})" for v, n in res["versions"].items())
    click.echo(
        f"snapshot of {res['collection']} (current {res['current']}; versions {versions}; "
        f"{res['history']} change sets) -> {out} ({res['bytes'] / 2**20:.1f} MiB, {res['seconds']}s)"
    )


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Replace an existing collection of that name.")
@click.option("--json", "as_json", is_flag=True)
@store_options
def restore(file: Path, replace: bool, as_json: bool, **so: Any) -> None:
    """Restore a snapshot FILE into the store (as --collection, default the snapshot's name).

    Every file in the snapshot is checked against its checksum before anything is written.
    The versions are written fresh and read back, and only then does the collection switch
    to them in one step; a killed restore leaves nothing visible, and re-running it resumes.
    """
    from ..jobs.backup import Snapshot
    from ..jobs.backup import restore as put

    ctx = click.get_current_context()
    given = ctx.get_parameter_source("collection") in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    snap = Snapshot(file)
    try:
        name = so["collection"] if given else snap.collection
        store = open_store(
            str(so["store"]), url=so["qdrant_url"], api_key=so["qdrant_api_key"], create=True, wait_s=so["wait"]
        )
        with store, ProgressBar(sum(v.count for v in snap.versions), "restore") as bar:
            res = put(store, snap, name, replace, progress=bar.update)
    finally:
        snap.close()
    if as_json:
        emit_json(res)
        return
    versions = ", ".join(f"{a} -> {b}" for a, b in res["versions"].items())
    click.echo(
        f"restored {res['collection']} (current {res['current']}; {versions}; {sum(res['counts'].values())} points, "
        f"{res['history']} change sets; verified) in {res['seconds']}s"
    )


@click.command()
@click.option("--to-store", type=click.Path(file_okay=False, path_type=Path), default=None, help="Embedded store dir.")
@click.option("--to-qdrant-url", default=None, help="Qdrant server / cluster URL.")
@click.option("--to-qdrant-api-key", envvar="KNNCLASS_TO_QDRANT_API_KEY", default=None, help="API key for it.")
@click.option("--to-collection", default=None, help="Name in the target (default: the same).")
@click.option("--replace", is_flag=True, help="Replace a target collection that is not a copy of this one.")
@click.option("--json", "as_json", is_flag=True)
@store_options
def copy(
    to_store: Path | None,
    to_qdrant_url: str | None,
    to_qdrant_api_key: str | None,
    to_collection: str | None,
    replace: bool,
    as_json: bool,
    **so: Any,
) -> None:
    """Copy the collection (all versions, metas, vectors, pointer, history) to another backend,
    without re-embedding; verified by counts and a checksum of (id, label, text, vector).

    Re-running resumes a killed copy, or brings a finished one up to date: points already
    there unchanged are skipped.
    """
    from ..jobs.backup import copy_collection

    if (to_store is None) == (to_qdrant_url is None):
        raise InputError("give one target: --to-store DIR or --to-qdrant-url URL")
    if to_store is not None and not so["qdrant_url"] and to_store.resolve() == so["store"].resolve():
        raise InputError(f"--to-store {to_store} is the source store; copy to another directory")
    clf = open_classifier(create=False, **so)
    with clf.store:
        clf.ref()
        dst = open_store(str(to_store), url=to_qdrant_url, api_key=to_qdrant_api_key, create=True)
        with dst, ProgressBar(_total(clf.store, clf.collection), "copy") as bar:
            res = copy_collection(clf.store, dst, clf.collection, to_collection, replace, progress=bar.update)
    if as_json:
        emit_json(res)
        return
    click.echo(
        f"copied {clf.collection} -> {res['collection']} (current {res['current']}): {res['written']} points written, "
        f"{res['skipped']} already there, {res['deleted']} removed, {res['history']} change sets; "
        f"verified in {res['seconds']}s"
    )


@click.command("export-data")
@click.option(
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="F.csv, F.jsonl or F.parquet (Parquet needs pyarrow).",
)
@click.option("--with-vectors", is_flag=True, help="Also write each example's stored vector.")
@store_options
def export_data(output: Path, with_vectors: bool, **so: Any) -> None:
    """Write every stored example of the current version to a file: id, text, each label set,
    the metadata columns (it indexes back with the same --label-col / --meta-col)."""
    from ..jobs.backup import export_data as export

    clf = open_classifier(create=False, **so)
    with clf.store:
        ref = clf.ref()
        with ProgressBar(clf.store.count(ref), "export") as bar:
            res = export(clf.store, clf.collection, output, with_vectors, progress=bar.update)
    click.echo(f"wrote {res['examples']} examples of {res['collection']} ({res['version']}) to {output}")


@click.command("history")
@click.argument("example_id", required=False)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1), help="Change sets listed without ID.")
@click.option("--json", "as_json", is_flag=True)
@store_options
def history_cmd(example_id: str | None, limit: int, as_json: bool, **so: Any) -> None:
    """The recorded changes of example ID (old -> new label and text, who, when), or without ID
    the newest change sets of the collection (their ids are what `undo` takes)."""
    from .. import history

    clf = open_classifier(create=False, **so)
    with clf.store:
        if example_id is None:
            sets = [cs.summary() for cs in history.change_sets(clf.store, clf.collection)[-limit:]]
        else:
            entries = history.example_history(clf.store, clf.collection, example_id)
    if example_id is None:
        if as_json:
            emit_json(sets)
            return
        for d in sets:
            undoes = f" (undoes {d['undoes']})" if d["undoes"] else ""
            click.echo(f"{d['id']}  {d['time']}  {d['who']:<10} {d['kind']:<8} {d['examples']:>6} examples{undoes}")
        if not sets:
            click.echo("no recorded changes")
        return
    if as_json:
        emit_json(entries)
        return
    for h in entries:

        def state(s: dict[str, str] | None) -> str:
            return "(absent)" if s is None else repr(s["label"])

        text = ""
        if h["old"] and h["new"] and h["old"]["text"] != h["new"]["text"]:
            text = f"; text {h['old']['text'][:40]!r} -> {h['new']['text'][:40]!r}"
        click.echo(
            f"{h['time']}  {h['change']}  {h['who']:<10} {h['kind']:<8} {state(h['old'])} -> {state(h['new'])}{text}"
        )
    if not entries:
        click.echo(f"no recorded changes of {example_id!r}")


@click.command()
@click.argument("change_id", required=False)
@click.option("--force", is_flag=True, help="Revert even examples that changed since (to their state before it).")
@click.option("--json", "as_json", is_flag=True)
@store_options
def undo(change_id: str | None, force: bool, as_json: bool, **so: Any) -> None:
    """Revert change set CHANGE_ID (default: the newest one not undone yet) exactly.

    Refused when its examples changed since, unless --force. The undo is recorded as a change
    set too: undoing it redoes the change.
    """
    from .. import history

    clf = open_classifier(create=False, **so)
    with clf.store:
        cs = history.undo(
            clf.store, clf.collection, change_id, force, who="cli", embed=lambda texts: clf.embed_texts(texts)
        )
    if as_json:
        emit_json(cs.summary())
        return
    click.echo(f"undid {cs.undoes}: {len(cs.changes)} examples restored (recorded as {cs.id})")


COMMANDS: list[click.Command] = [snapshot, restore, copy, export_data, history_cmd, undo]
