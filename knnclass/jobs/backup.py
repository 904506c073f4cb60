"""Snapshots, restores and copies of a collection, and exports of its examples.

A snapshot is a zip file that either backend writes and reads: per version
`versions/vN/meta.json` and parts of up to 4096 points (`points-00000.jsonl`: id, text,
label per line; `vectors-00000.npy`: float32, one row per line), `history.jsonl` (the
collection's change sets) and, written last, `manifest.json` with the current version,
per-version counts and content checksums, and the sha256 of every other file. Qdrant's
own snapshots are not used: qdrant-client's local mode (the stand-in for a server in the
tests) has none, and they cover one physical collection, not the versions, metas,
alias and history around it.

Restore and copy write into versions of their own, tagged in `meta.extra` and without a
rule while they fill, so nothing serves them; then verify them (counts, and a checksum
over (id, label, text, vector bytes) sorted by id), write the history into a fresh log,
set the metas (which name that log) and switch the collection's pointer: one atomic step
makes data, metas and history visible together. A killed run leaves staged versions that
the next run of the same restore or copy reuses (points already present unchanged are
skipped) or removes.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import secrets
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Example
from ..errors import (
    CollectionExistsError,
    DependencyError,
    InputError,
    SnapshotError,
    StoreError,
    VerificationError,
)
from ..store._files import fsync_dir
from ..store.base import HISTORY_KEY, CollectionMeta, Ref, Store, validate_name

__all__ = ["ContentHash", "Snapshot", "copy_collection", "export_data", "restore", "snapshot"]

FORMAT = "knnclass-snapshot"
FORMAT_VERSION = 1
PART = 4096  # points per snapshot part
STAGING = "staging"  # meta.extra: {"from": tag, "as": version} while a restore or copy fills a version
COPIED = "copied_from"  # meta.extra of a finished copy: {"from": tag, "as": version}
# qdrant-client's local mode re-normalises cosine vectors on every write (Qdrant keeps unit
# vectors as given), which moves components by an ulp or so: within this, a vector is the same.
VECTOR_TOLERANCE = 1e-6

Progress = Callable[[int], None]


class ContentHash:
    """sha256 over (id, label, text, vector bytes) of every point, sorted by id: order-free, exact."""

    def __init__(self) -> None:
        self._rows: list[tuple[str, bytes]] = []

    def add(self, examples: Sequence[Example], vectors: np.ndarray) -> None:
        for e, v in zip(examples, vectors, strict=True):
            fields: list[Any] = [e.id, e.label, e.text]
            if e.labels or e.meta:  # extra label sets and metadata count too (plain examples hash as before)
                fields += [dict(sorted(e.labels.items())), dict(sorted(e.meta.items()))]
            h = hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode())
            h.update(np.asarray(v, dtype="<f4").tobytes())
            self._rows.append((e.id, h.digest()))

    @property
    def count(self) -> int:
        return len(self._rows)

    def hexdigest(self) -> str:
        h = hashlib.sha256()
        for _, d in sorted(self._rows):
            h.update(d)
        return h.hexdigest()


def _same_vector(a: np.ndarray | None, b: np.ndarray) -> bool:
    if a is None or a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b) or np.max(np.abs(a - b)) <= VECTOR_TOLERANCE)


# --- sources: a live collection, or a snapshot file -------------------------------------------
@dataclass(frozen=True)
class _Version:
    name: str
    meta: CollectionMeta
    count: int
    checksum: str | None = None


class _StoreSource:
    """A collection in a store, read with scroll (read-only)."""

    def __init__(self, store: Store, name: str):
        ref = store.ref(name)
        self.store, self.collection, self.current = store, name, ref.version
        metas = {v: store.get_meta(Ref(name, v)) for v in store.versions(name)}
        self.versions = [  # a version a killed restore or copy left half-filled is not part of the collection
            _Version(v, m, store.count(Ref(name, v))) for v, m in metas.items() if _tag(m, v, (STAGING,)) is None
        ]
        self._history = store.read_history(name, store.history_log(ref))
        self.tag = f"{store.backend}:{getattr(store, 'root', None) or getattr(store, 'url', None) or 'client'}/{name}"

    def fingerprint(self) -> Any:
        """What would show that the collection changed while being read."""
        return (
            self.current,
            [(v.name, v.count, json.dumps(v.meta.to_dict(), sort_keys=True)) for v in self.versions],
            len(self._history),
            self._history[-1] if self._history else None,
        )

    def batches(self, version: str, size: int = PART) -> Iterator[tuple[list[Example], np.ndarray]]:
        for examples, vecs in self.store.scroll(Ref(self.collection, version), size, with_vectors=True):
            assert vecs is not None
            yield examples, vecs

    def history(self) -> list[dict[str, Any]]:
        return self._history


class Snapshot:
    """A snapshot file, opened and checked: every file against the manifest's sha256, every version
    against its count and content checksum. SnapshotError when anything does not match."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except (zipfile.BadZipFile, OSError) as e:
            raise SnapshotError(f"{path}: not a knnclass snapshot ({e})") from None
        try:
            m = json.loads(self._zip.read("manifest.json"))
        except KeyError:
            raise SnapshotError(f"{path}: no manifest.json; not a knnclass snapshot, or an incomplete one") from None
        except (zipfile.BadZipFile, ValueError, OSError) as e:
            raise SnapshotError(f"{path}: manifest.json is damaged ({e})") from None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise SnapshotError(f"{path}: not a knnclass snapshot")
        if m.get("format_version") != FORMAT_VERSION:
            raise SnapshotError(f"{path}: snapshot format {m.get('format_version')} is not supported (this is 1)")
        self.manifest = m
        try:
            self.collection = validate_name(m["collection"])
            self.current = str(m["current"])
            self.versions = [
                _Version(v["name"], CollectionMeta.from_dict(v["meta"]), int(v["count"]), v["checksum"])
                for v in m["versions"]
            ]
            self._parts = {v["name"]: int(v["parts"]) for v in m["versions"]}
            files: dict[str, dict[str, Any]] = m["files"]
        except (KeyError, TypeError, ValueError) as e:
            raise SnapshotError(f"{path}: manifest.json is malformed ({e})") from None
        self.tag = f"snapshot:{m.get('id', '')}"
        self._files = files
        self._verify()

    def _read(self, name: str) -> bytes:
        entry = self._files.get(name)
        if entry is None:
            raise SnapshotError(f"{self.path}: {name} is not in the manifest")
        try:
            data = self._zip.read(name)
        except KeyError:
            raise SnapshotError(f"{self.path}: {name} is missing; the snapshot is incomplete") from None
        except (zipfile.BadZipFile, OSError) as e:
            raise SnapshotError(f"{self.path}: {name} is damaged ({e})") from None
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise SnapshotError(f"{self.path}: {name} does not match its checksum; the snapshot is damaged")
        return data

    def _verify(self) -> None:
        for name in self._files:
            self._read(name)
        names = {v.name for v in self.versions}
        if self.current not in names:
            raise SnapshotError(f"{self.path}: the current version {self.current!r} is not in the snapshot")
        for v in self.versions:
            h = ContentHash()
            for examples, vecs in self.batches(v.name):
                h.add(examples, vecs)
            if h.count != v.count or h.hexdigest() != v.checksum:
                raise SnapshotError(f"{self.path}: version {v.name} does not match its recorded count and checksum")

    def batches(self, version: str, size: int = PART) -> Iterator[tuple[list[Example], np.ndarray]]:
        for i in range(self._parts[version]):
            lines = self._read(f"versions/{version}/points-{i:05d}.jsonl").decode("utf-8").splitlines()
            vecs = np.load(io.BytesIO(self._read(f"versions/{version}/vectors-{i:05d}.npy")), allow_pickle=False)
            try:
                examples = [
                    Example(d["id"], d["text"], d["label"], d.get("labels") or {}, d.get("meta") or {})
                    for d in map(json.loads, lines)
                ]
            except (KeyError, TypeError, ValueError) as e:
                raise SnapshotError(f"{self.path}: version {version} part {i} is malformed ({e})") from None
            if len(examples) != len(vecs):
                raise SnapshotError(f"{self.path}: version {version} part {i}: points and vectors differ in length")
            yield examples, vecs.astype(np.float32, copy=False)

    def history(self) -> list[dict[str, Any]]:
        if "history.jsonl" not in self._files:
            return []
        return [json.loads(line) for line in self._read("history.jsonl").decode("utf-8").splitlines() if line]

    def close(self) -> None:
        self._zip.close()


# --- snapshot --------------------------------------------------------------------------------
def _write_snapshot(src: _StoreSource, path: Path, progress: Progress | None) -> dict[str, Any]:
    files: dict[str, dict[str, Any]] = {}
    versions = []
    with zipfile.ZipFile(path, "w", allowZip64=True) as zf:

        def put(name: str, data: bytes, compress: bool = True) -> None:
            zf.writestr(name, data, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
            files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

        for v in src.versions:
            put(f"versions/{v.name}/meta.json", json.dumps(v.meta.to_dict(), indent=2).encode())
            h = ContentHash()
            parts = 0
            for examples, vecs in src.batches(v.name):
                lines = (json.dumps(e.to_dict(), ensure_ascii=False) for e in examples)
                put(f"versions/{v.name}/points-{parts:05d}.jsonl", ("\n".join(lines) + "\n").encode())
                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(vecs, dtype="<f4"), allow_pickle=False)
                put(f"versions/{v.name}/vectors-{parts:05d}.npy", buf.getvalue(), compress=False)
                h.add(examples, vecs)
                parts += 1
                if progress:
                    progress(len(examples))
            versions.append(
                {
                    "name": v.name,
                    "count": h.count,
                    "dim": v.meta.dim,
                    "checksum": h.hexdigest(),
                    "parts": parts,
                    "meta": v.meta.to_dict(),
                }
            )
        history = src.history()
        put("history.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in history).encode())
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "id": uuid.uuid4().hex,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "collection": src.collection,
            "current": src.current,
            "source": src.tag,
            "versions": versions,
            "history": {"records": len(history)},
            "files": files,
        }
        zf.writestr("manifest.json", json.dumps(manifest, indent=2), zipfile.ZIP_DEFLATED)
    return manifest


def _remove_stale_temps(out: Path) -> None:
    """Temp files of earlier writes of `out` whose process is gone (killed mid-write)."""
    for tmp in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
        pid = tmp.name[len(out.name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                tmp.unlink(missing_ok=True)
            except PermissionError:
                pass  # alive, someone else's


def snapshot(
    store: Store, name: str, out: str | Path, progress: Progress | None = None, attempts: int = 3
) -> dict[str, Any]:
    """Write a checksummed snapshot of collection `name` (every version, meta, point and the history) to `out`.

    Read-only against the store. The file appears complete or not at all (temp file, fsync,
    rename). If the collection changed while it was read (a live service writing to a
    server collection), it is read again, up to `attempts` times.
    """
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out}: is a directory; give a file name for the snapshot")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: no such directory")
    t0 = time.perf_counter()
    _remove_stale_temps(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        for _ in range(attempts):
            src = _StoreSource(store, name)
            manifest = _write_snapshot(src, tmp, progress)
            if _StoreSource(store, name).fingerprint() != src.fingerprint():
                continue
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, out)
            fsync_dir(out.parent)
            return {
                "collection": name,
                "file": str(out),
                "bytes": out.stat().st_size,
                "current": manifest["current"],
                "versions": {v["name"]: v["count"] for v in manifest["versions"]},
                "checksums": {v["name"]: v["checksum"] for v in manifest["versions"]},
                "history": manifest["history"]["records"],
                "seconds": round(time.perf_counter() - t0, 2),
            }
    finally:
        tmp.unlink(missing_ok=True)
    raise StoreError(
        f"collection {name!r} kept changing while it was read ({attempts} tries); retry when it is quieter"
    )


# --- writing a collection into a store (restore, copy) -----------------------------------------
def _tag(meta: CollectionMeta, version: str, keys: Sequence[str]) -> str | None:
    """The source tag of a target version written by a restore or copy (only where it was written as `version`)."""
    for key in keys:
        t = meta.extra.get(key)
        if isinstance(t, dict) and t.get("as") == version and isinstance(t.get("from"), str):
            return str(t["from"])
    return None


def _install(
    dst: Store,
    name: str,
    src: _StoreSource | Snapshot,
    replace: bool,
    copy: bool,
    progress: Progress | None,
) -> dict[str, Any]:
    """Write `src`'s versions, metas and history into collection `name` of `dst`, verify, then switch."""
    validate_name(name)
    t0 = time.perf_counter()
    keys = (STAGING, COPIED) if copy else (STAGING,)
    metas = {v: dst.get_meta(Ref(name, v)) for v in dst.versions(name)}
    mine = {t: v for v, m in metas.items() if (t := _tag(m, v, keys)) and t.startswith(src.tag + "@")}
    existing = dst.current_version(name)
    if existing is not None and not replace:
        ours = _tag(metas[existing], existing, (COPIED,)) if copy else None
        if not (ours and ours.startswith(src.tag + "@")):  # a finished copy of this source is brought up to date
            raise CollectionExistsError(
                f"collection {name!r} already exists in the target; replace it explicitly"
                + ("" if copy else " (or restore it under another collection name)")
            )
    mapping: dict[str, str] = {}
    stats = {"written": 0, "skipped": 0, "deleted": 0, "renormalised": 0}
    checksums: dict[str, str] = {}
    for sv in src.versions:
        tag = f"{src.tag}@{sv.name}"
        fresh = tag not in mine
        if fresh:
            staged = sv.meta.with_(rule=None, tuning=None, policy=None, head=None, extra={})
            tref = dst.create_version(name, staged)
            dst.set_meta(tref, staged.with_(extra={STAGING: {"from": tag, "as": tref.version}}))
        else:
            tref = Ref(name, mine[tag])
        mapping[sv.name] = tref.version
        seen: set[str] = set()
        for examples, vecs in src.batches(sv.name):
            have = {} if fresh else {e.id: (e, v) for e, v in dst.retrieve(tref, [e.id for e in examples], True)}
            todo = [
                i
                for i, e in enumerate(examples)
                if not (e.id in have and have[e.id][0] == e and _same_vector(have[e.id][1], vecs[i]))
            ]
            if todo:
                dst.upsert(tref, [examples[i] for i in todo], vecs[todo])
            stats["written"] += len(todo)
            stats["skipped"] += len(examples) - len(todo)
            seen.update(e.id for e in examples)
            if progress:
                progress(len(examples))
        if not fresh:
            extra_ids = [e.id for batch, _ in dst.scroll(tref, 4096) for e in batch if e.id not in seen]
            for i in range(0, len(extra_ids), 1024):
                dst.delete(tref, extra_ids[i : i + 1024])
            stats["deleted"] += len(extra_ids)
        dst.optimize(tref)
        checksums[sv.name], renorm = _verify(dst, tref, src, sv)
        stats["renormalised"] += renorm
    # history into a fresh log, named by the metas: the switch below makes it the one in use
    log = secrets.token_hex(6)
    history = src.history()
    dst.append_history(name, log, history)
    target_current = mapping[src.current]
    for sv in sorted(src.versions, key=lambda v: mapping[v.name] == target_current):
        tv = mapping[sv.name]
        extra = {k: v for k, v in sv.meta.extra.items() if k not in (STAGING, COPIED, HISTORY_KEY, "previous")}
        previous = sv.meta.extra.get("previous")
        if previous in mapping:
            extra["previous"] = mapping[previous]
        extra[HISTORY_KEY] = log
        if copy:
            extra[COPIED] = {"from": f"{src.tag}@{sv.name}", "as": tv}
        dst.set_meta(Ref(name, tv), sv.meta.with_(extra=extra))
    if dst.current_version(name) != target_current:
        dst.switch(name, target_current)  # the commit point
    dropped = [v for v in dst.versions(name) if v not in mapping.values()]
    for v in dropped:
        dst.drop_version(Ref(name, v))
    in_use = {dst.history_log(Ref(name, v)) for v in mapping.values()}
    for old in dst.history_logs(name):
        if old not in in_use:
            dst.drop_history(name, old)
    return {
        "collection": name,
        "current": target_current,
        "versions": mapping,
        "counts": {mapping[v.name]: v.count for v in src.versions},
        "checksums": {mapping[v]: c for v, c in checksums.items()},
        "history": len(history),
        "dropped": dropped,
        **stats,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _verify(dst: Store, tref: Ref, src: _StoreSource | Snapshot, sv: _Version) -> tuple[str, int]:
    """Read the written version back against the source: the target's checksum and how many vectors the
    target re-normalised; VerificationError when a point is missing, differs, or the counts disagree."""
    mine, theirs = ContentHash(), ContentHash()
    renorm = bad = n = 0
    first = ""
    for examples, vecs in src.batches(sv.name):
        theirs.add(examples, vecs)
        got = {e.id: (e, v) for e, v in dst.retrieve(tref, [e.id for e in examples], True)}
        for e, v in zip(examples, vecs, strict=True):
            g = got.get(e.id)
            if g is None or g[0] != e or not _same_vector(g[1], v):
                bad += 1
                first = first or e.id
                continue
            assert g[1] is not None
            renorm += not np.array_equal(g[1], v)
            mine.add([g[0]], g[1][None, :])
        n += len(examples)
    count = dst.count(tref)
    if bad or count != n:
        raise VerificationError(
            f"{tref.name} {tref.version} does not read back as written: {count} points for {n}, {bad} differing"
            + (f" (first: {first!r})" if first else "")
            + "; nothing was switched — re-run the same command"
        )
    if sv.checksum is not None and theirs.hexdigest() != sv.checksum:
        raise VerificationError(f"version {sv.name} changed while it was copied; re-run the same command")
    if not renorm and mine.hexdigest() != theirs.hexdigest():
        raise VerificationError(f"{tref.name} {tref.version}: checksum differs from the source's")
    return mine.hexdigest(), renorm


def restore(
    store: Store,
    snap: Snapshot | str | Path,
    name: str | None = None,
    replace: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Restore a snapshot (a checked `Snapshot`, or a path) into `store` as collection `name` (default: the snapshot's).

    A path is checked in full before anything is written; an existing collection is replaced
    only with `replace` (its old versions and history are dropped after the switch).
    """
    src = snap if isinstance(snap, Snapshot) else Snapshot(Path(snap))
    try:
        res = _install(store, name or src.collection, src, replace, False, progress)
        return {"snapshot": src.manifest.get("id"), **res}
    finally:
        if not isinstance(snap, Snapshot):
            src.close()


def copy_collection(
    src: Store,
    dst: Store,
    name: str,
    to_name: str | None = None,
    replace: bool = False,
    progress: Progress | None = None,
    passes: int = 3,
) -> dict[str, Any]:
    """Copy collection `name` with its vectors (no re-embedding), metas, pointer and history into `dst`.

    Verified by counts and checksum; re-running resumes (points already present unchanged
    are skipped) and brings a finished copy up to date. If the source changed while it was
    read, the changes are copied in another pass, up to `passes`.
    """
    if _location(src) == _location(dst) and (to_name or name) == name:
        raise InputError("the source and the target are the same store and collection")
    for attempt in range(passes):
        source = _StoreSource(src, name)
        res = _install(dst, to_name or name, source, replace and attempt == 0, True, progress)
        if _StoreSource(src, name).fingerprint() == source.fingerprint():
            return {"from": source.tag, **res, "passes": attempt + 1}
    raise StoreError(f"collection {name!r} kept changing while it was copied; re-run the copy to catch up")


def _location(store: Store) -> str:
    return f"{store.backend}:{getattr(store, 'root', None) or getattr(store, 'url', None) or id(store)}"


# --- export ------------------------------------------------------------------------------------
EXPORT_FORMATS = (".csv", ".jsonl", ".parquet")


def export_data(
    store: Store, name: str, out: str | Path, with_vectors: bool = False, progress: Progress | None = None
) -> dict[str, Any]:
    """Every stored example of the current version as CSV, JSONL or Parquet (by `out`'s suffix; Parquet
    needs pyarrow): id, text, one column per label set (named as when indexed), the metadata
    columns, optionally the vector. The file appears complete or not at all, and indexes back
    with the same `--label-col`s and `--meta-col`s."""
    import csv

    out = Path(out)
    kind = out.suffix.lower()
    if kind not in EXPORT_FORMATS:
        raise InputError(f"{out}: the output must end in {', '.join(EXPORT_FORMATS)}")
    if kind == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise DependencyError("writing Parquet needs pyarrow: pip install pyarrow (or use .csv / .jsonl)") from None
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: no such directory")
    ref = store.ref(name)
    meta = store.get_meta(ref)
    sets, metas = meta.set_names(), list(meta.payload_schema or {})
    columns = ["id", "text", *sets, *metas, *(["vector"] if with_vectors else [])]
    clash = sorted({c for c in columns if columns.count(c) > 1})
    if clash:
        raise InputError(f"collection {name!r}: label set / metadata column {clash[0]!r} clashes with another column")

    def rows(examples: list[Example], vecs: np.ndarray | None) -> list[dict[str, Any]]:
        out_rows = []
        for i, e in enumerate(examples):
            row: dict[str, Any] = {"id": e.id, "text": e.text, sets[0]: e.label}
            row.update({s: e.labels.get(s) for s in sets[1:]})
            row.update({c: e.meta.get(c) for c in metas})
            if vecs is not None:
                row["vector"] = vecs[i]
            out_rows.append(row)
        return out_rows

    _remove_stale_temps(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    n = 0
    try:
        batches = store.scroll(ref, 4096, with_vectors=with_vectors)
        if kind == ".parquet":
            kinds = {"number": pa.float64()}
            schema = pa.schema(
                [(c, pa.string()) for c in ["id", "text", *sets]]
                + [(c, kinds.get((meta.payload_schema or {})[c], pa.string())) for c in metas]
                + ([("vector", pa.list_(pa.float32(), meta.dim))] if with_vectors else [])
            )
            with pq.ParquetWriter(tmp, schema) as w:
                for examples, vecs in batches:
                    batch = rows(examples, None)
                    cols: list[Any] = [[r[c] for r in batch] for c in columns if c != "vector"]
                    if with_vectors:
                        assert vecs is not None
                        flat = pa.array(np.ascontiguousarray(vecs, dtype=np.float32).ravel(), pa.float32())
                        cols.append(pa.FixedSizeListArray.from_arrays(flat, meta.dim))
                    w.write_table(pa.Table.from_arrays(cols, schema=schema))
                    n += len(examples)
                    if progress:
                        progress(len(examples))
        else:
            with tmp.open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f) if kind == ".csv" else None
                if writer is not None:
                    writer.writerow(columns)
                for examples, vecs in batches:
                    for row in rows(examples, vecs):
                        if "vector" in row:
                            row["vector"] = row["vector"].tolist()
                        if writer is not None:
                            writer.writerow(
                                [json.dumps(v) if c == "vector" else ("" if v is None else v) for c, v in row.items()]
                            )
                        else:
                            f.write(json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False))
                            f.write("\n")
                    n += len(examples)
                    if progress:
                        progress(len(examples))
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "collection": name,
        "version": ref.version,
        "file": str(out),
        "examples": n,
        "vectors": with_vectors,
        "columns": columns,
    }
