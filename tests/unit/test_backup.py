"""Snapshots, restores, copies between backends and exports (the server backend via qdrant-client's local mode)."""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from knnclass import history
from knnclass.classifier import Classifier
from knnclass.cli import cli
from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.errors import CollectionExistsError, DependencyError, SnapshotError, StoreError
from knnclass.jobs.backup import COPIED, ContentHash, Snapshot, copy_collection, export_data, restore, snapshot
from knnclass.store import Store
from knnclass.store.base import HISTORY_KEY, Ref
from knnclass.store.edge import EdgeStore
from knnclass.store.server import ServerStore

TOPICS = ["card", "transfer", "pin", "refund"]
ENC = FakeEncoder(topics=TOPICS)
QUERIES = [f"{t} question {i}" for t in TOPICS for i in range(4)] + ["nothing like it"]


def _server() -> ServerStore:
    from qdrant_client import QdrantClient

    return ServerStore(client=QdrantClient(location=":memory:"))


def _build(st: Store, tmp: Path) -> None:
    """Two versions (v2 current, promoted from v1), a tuned rule and a few recorded edits."""
    from knnclass.jobs.reindex import promote

    c = Classifier(st, "tickets", encoder=ENC)
    c.index([Example(f"{t}-{i}", f"{t} ticket {i} {i * 7 % 5}", t) for t in TOPICS for i in range(20)])
    c.tune()
    run = tmp / "run"
    run.mkdir(exist_ok=True)
    (run / "run.json").write_text(json.dumps({"format": 1, "strategy": "full", "encoder": "x", "tasks": []}))
    promote(st, "tickets", run, encoder=ENC)
    c.relabel("card-3", "pin")
    c.delete("refund-4")
    c.add([Example("new-1", "transfer brand new", "transfer")])


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed embedded store built once by `_build`; tests work on copies of it."""
    tmp = tmp_path_factory.mktemp("base")
    st = EdgeStore(tmp / "store")
    _build(st, tmp)
    st.close()
    return tmp / "store"


def _filled(base: Path, dst: Path) -> EdgeStore:
    shutil.copytree(base, dst)
    return EdgeStore(dst)


def _filled_server(tmp: Path) -> ServerStore:
    """A server-backend store holding the same collection (built through the backend's own writes)."""
    st = _server()
    _build(st, tmp)
    return st


def _search(st: Store, name: str = "tickets") -> list[list[str]]:
    ref = st.ref(name)
    return [[h.id for h in row] for row in st.search(ref, ENC.embed(QUERIES), 8)]


def _dump(st: Store, name: str = "tickets") -> dict[str, object]:
    """Everything a backup must keep: current pointer, per-version metas (minus our bookkeeping) and points."""
    out: dict[str, object] = {"current": st.current_version(name)}
    for v in st.versions(name):
        meta = st.get_meta(Ref(name, v)).to_dict()
        meta["extra"] = {k: x for k, x in meta["extra"].items() if k not in (HISTORY_KEY, COPIED)}
        points = {}
        for examples, vecs in st.scroll(Ref(name, v), 50, with_vectors=True):
            assert vecs is not None
            points.update({e.id: (e.text, e.label, vecs[i]) for i, e in enumerate(examples)})
        out[v] = (meta, points)
    out["history"] = st.read_history(name, st.history_log(st.ref(name)))
    return out


def _same(a: dict[str, object], b: dict[str, object], exact: bool = True) -> None:
    assert a.keys() == b.keys() and a["current"] == b["current"] and a["history"] == b["history"]
    for k in a:
        if k in ("current", "history"):
            continue
        (ma, pa), (mb, pb) = a[k], b[k]  # type: ignore[misc]
        assert ma == mb, k
        assert pa.keys() == pb.keys()
        for i in pa:
            assert pa[i][:2] == pb[i][:2]
            if exact:
                assert pa[i][2].tobytes() == pb[i][2].tobytes(), i
            else:  # the local-mode stand-in re-normalises on write; a Qdrant server keeps unit vectors as given
                assert np.max(np.abs(pa[i][2] - pb[i][2])) <= 1e-6


def test_snapshot_then_restore_loses_nothing(base: Path, tmp_path: Path) -> None:
    src = _filled(base, tmp_path / "a")
    res = snapshot(src, "tickets", tmp_path / "t.zip")
    assert res["versions"] == {"v1": 80, "v2": 80} and res["current"] == "v2" and res["history"] == 3
    snap = Snapshot(tmp_path / "t.zip")
    assert [v.checksum for v in snap.versions] == [res["checksums"]["v1"], res["checksums"]["v2"]]
    snap.close()
    dst = EdgeStore(tmp_path / "b")
    out = restore(dst, tmp_path / "t.zip")
    assert out["versions"] == {"v1": "v1", "v2": "v2"} and out["renormalised"] == 0
    _same(_dump(src), _dump(dst))  # counts, metas (previous -> v1 included), vectors bitwise, pointer, history
    assert _search(src) == _search(dst)
    # the restored history is the collection's: undo works on the restored copy
    history.undo(dst, "tickets")
    assert dst.retrieve(dst.ref("tickets"), ["new-1"]) == []
    src.close()
    dst.close()


def test_server_snapshot_restores_into_either_backend(base: Path, tmp_path: Path) -> None:
    srv = _filled_server(tmp_path)
    snapshot(srv, "tickets", tmp_path / "s.zip")
    edge = EdgeStore(tmp_path / "e")
    restore(edge, tmp_path / "s.zip")
    _same(_dump(srv), _dump(edge))  # what the server returned, bit for bit
    srv2 = _server()
    restore(srv2, tmp_path / "s.zip")
    _same(_dump(srv), _dump(srv2), exact=False)
    assert _search(srv) == _search(srv2) == _search(edge)
    for st in (srv, edge, srv2):
        st.close()


def test_restore_refuses_an_existing_collection_unless_replace(base: Path, tmp_path: Path) -> None:
    src = _filled(base, tmp_path / "a")
    c = Classifier(src, "tickets", encoder=ENC)
    snapshot(src, "tickets", tmp_path / "t.zip")
    c.relabel("pin-1", "card")  # the store moves on after the snapshot
    with pytest.raises(CollectionExistsError, match="already exists in the target; replace it"):
        restore(src, tmp_path / "t.zip")
    assert c.get("pin-1").label == "card"
    other = restore(src, tmp_path / "t.zip", name="tickets-restored")
    assert other["collection"] == "tickets-restored" and src.list_collections() == ["tickets", "tickets-restored"]
    assert src.retrieve(src.ref("tickets-restored"), ["pin-1"])[0][0].label == "pin"
    res = restore(src, tmp_path / "t.zip", replace=True)
    assert res["versions"] == {"v1": "v3", "v2": "v4"} and res["dropped"] == ["v1", "v2"]
    assert src.versions("tickets") == ["v3", "v4"] and src.current_version("tickets") == "v4"
    assert src.get_meta(src.ref("tickets")).extra["previous"] == "v3"
    assert c.get("pin-1").label == "pin" and len(history.change_sets(src, "tickets")) == 3
    assert src.history_logs("tickets") == [src.history_log(src.ref("tickets"))]  # the old log is gone
    src.close()


def test_damaged_or_incomplete_snapshot_writes_nothing(base: Path, tmp_path: Path) -> None:
    src = _filled(base, tmp_path / "a")
    snapshot(src, "tickets", tmp_path / "t.zip")
    src.close()
    good = zipfile.ZipFile(tmp_path / "t.zip")
    # one flipped label inside a points file (its zip CRC recomputed, so only our checksum can tell)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        for info in good.infolist():
            data = good.read(info.filename)
            if info.filename == "versions/v2/points-00000.jsonl":
                data = data.replace(b'"label": "card"', b'"label": "pin"', 1)
            z.writestr(info.filename, data)
    st = EdgeStore(tmp_path / "b")
    with pytest.raises(SnapshotError, match="does not match its checksum"):
        restore(st, bad)
    truncated = tmp_path / "cut.zip"
    truncated.write_bytes((tmp_path / "t.zip").read_bytes()[:5000])
    with pytest.raises(SnapshotError):
        Snapshot(truncated)
    good.close()
    assert st.list_collections() == [] and st.versions("tickets") == []
    st.close()
    r = CliRunner().invoke(cli, ["restore", str(bad), "--store", str(tmp_path / "c")])
    assert r.exit_code == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()  # checked before the store is even created


def test_round_trip_embedded_server_embedded(base: Path, tmp_path: Path) -> None:
    edge = _filled(base, tmp_path / "a")
    srv = _server()
    res = copy_collection(edge, srv, "tickets")
    assert res["written"] == 160 and res["versions"] == {"v1": "v1", "v2": "v2"}
    back = EdgeStore(tmp_path / "b")
    copy_collection(srv, back, "tickets")
    assert _search(edge) == _search(srv) == _search(back)
    _same(_dump(edge), _dump(back), exact=False)
    # the vectors that came back carry at most the stand-in's re-normalisation: scores agree to float32 rounding
    ref = edge.ref("tickets")
    q = ENC.embed(QUERIES)
    a, b = edge.search(ref, q, 5), back.search(back.ref("tickets"), q, 5)
    assert all(abs(x.score - y.score) < 1e-5 for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))
    # the whole history came along, and classify on the copy answers as the original
    assert history.change_sets(back, "tickets") == history.change_sets(edge, "tickets")
    p1 = Classifier(edge, "tickets", encoder=ENC).classify(QUERIES)[0]
    p2 = Classifier(back, "tickets", encoder=ENC).classify(QUERIES)[0]
    assert [p.label for p in p1] == [p.label for p in p2]
    for st in (edge, srv, back):
        st.close()


def test_copy_resumes_and_catches_up(base: Path, tmp_path: Path) -> None:
    src = _filled(base, tmp_path / "a")
    c = Classifier(src, "tickets", encoder=ENC)
    dst = EdgeStore(tmp_path / "b")
    copy_collection(src, dst, "tickets")
    again = copy_collection(src, dst, "tickets")
    assert (again["written"], again["skipped"], again["deleted"]) == (0, 160, 0)
    c.relabel("pin-7", "refund")
    c.delete("card-9")
    c.add([Example("new-2", "pin brand new", "pin"), Example("new-3", "card brand new", "card")])
    res = copy_collection(src, dst, "tickets")
    assert (res["written"], res["deleted"], res["skipped"]) == (3, 1, 80 + 78)
    _same(_dump(src), _dump(dst))
    h = ContentHash()
    for examples, vecs in src.scroll(src.ref("tickets"), 1000, with_vectors=True):
        assert vecs is not None
        h.add(examples, vecs)
    assert res["checksums"]["v2"] == h.hexdigest()
    # a target collection that is not a copy of this source is only replaced on request
    other = EdgeStore(tmp_path / "c")
    Classifier(other, "tickets", encoder=ENC).index([Example("z", "zzz", "card")])
    with pytest.raises(CollectionExistsError):
        copy_collection(src, other, "tickets")
    res = copy_collection(src, other, "tickets", replace=True)
    assert res["versions"] == {"v1": "v2", "v2": "v3"} and res["dropped"] == ["v1"]
    assert other.versions("tickets") == ["v2", "v3"] and other.get_meta(other.ref("tickets")).extra["previous"] == "v2"
    assert _search(other) == _search(src) and res["checksums"]["v3"] == h.hexdigest()
    for st in (src, dst, other):
        st.close()


@pytest.mark.parametrize("job", ["restore", "copy"])
def test_interrupted_job_leaves_nothing_visible_and_resumes(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job: str
) -> None:
    src = _filled(base, tmp_path / "a")
    snapshot(src, "tickets", tmp_path / "t.zip")
    dst = _server()
    real = dst.upsert
    calls = {"n": 0}

    def crash_on_second_version(*a, **k):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as good as a kill: nothing after this point runs
        return real(*a, **k)

    def run() -> dict[str, object]:
        if job == "restore":
            return restore(dst, tmp_path / "t.zip")
        return copy_collection(src, dst, "tickets")

    monkeypatch.setattr(dst, "upsert", crash_on_second_version)
    with pytest.raises(KeyboardInterrupt):
        run()
    assert dst.list_collections() == [] and dst.current_version("tickets") is None  # nothing visible
    assert all(dst.get_meta(Ref("tickets", v)).rule is None for v in dst.versions("tickets"))  # nothing servable
    res = run()
    assert res["skipped"] == 80 and res["written"] == 80  # v1 was kept from the first run
    assert res["versions"] == {"v1": "v1", "v2": "v2"} and dst.versions("tickets") == ["v1", "v2"]
    _same(_dump(src), _dump(dst), exact=False)
    assert len(dst.history_logs("tickets")) == 1
    src.close()
    dst.close()


def test_snapshot_rereads_a_collection_that_changed_while_read(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = _filled(base, tmp_path / "a")
    c = Classifier(st, "tickets", encoder=ENC)
    real = st.scroll
    calls = {"n": 0}

    def scroll_and_write(*a, **k):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:  # a live write while the first pass reads
            c.relabel("transfer-2", "card")
        yield from real(*a, **k)

    monkeypatch.setattr(st, "scroll", scroll_and_write)
    snapshot(st, "tickets", tmp_path / "t.zip")
    snap = Snapshot(tmp_path / "t.zip")
    assert len(snap.history()) == 4  # the snapshot holds the write, and the data agrees with it
    labels = {e.id: e.label for ex, _ in snap.batches("v2") for e in ex}
    assert labels["transfer-2"] == "card"
    snap.close()

    def always_changing(*a, **k):  # type: ignore[no-untyped-def]
        c.add([Example(f"busy-{calls['n']}", "card again", "card")])
        calls["n"] += 1
        yield from real(*a, **k)

    monkeypatch.setattr(st, "scroll", always_changing)
    with pytest.raises(StoreError, match="kept changing"):
        snapshot(st, "tickets", tmp_path / "u.zip")
    assert not (tmp_path / "u.zip").exists() and not list(tmp_path.glob(".u.zip*"))
    st.close()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_export_data(base: Path, tmp_path: Path, suffix: str) -> None:
    st = _filled(base, tmp_path / "a")
    out = tmp_path / f"x{suffix}"
    res = export_data(st, "tickets", out, with_vectors=True)
    stored = {
        e.id: (e, v)
        for ex, vs in st.scroll(st.ref("tickets"), 500, with_vectors=True)
        for e, v in zip(ex, vs, strict=True)
    }  # type: ignore[arg-type]
    assert res["examples"] == len(stored) == 80
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        import csv

        rows = [{**r, "vector": json.loads(r["vector"])} for r in csv.DictReader(out.open())]
    assert len(rows) == 80
    for r in rows:
        e, v = stored[r["id"]]
        assert (r["text"], r["label"]) == (e.text, e.label)
        assert np.asarray(r["vector"], dtype=np.float32).tobytes() == v.tobytes()
    export_data(st, "tickets", tmp_path / f"y{suffix}")
    st.close()


def test_export_parquet_without_pyarrow(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = _filled(base, tmp_path / "a")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(DependencyError, match="pip install pyarrow"):
        export_data(st, "tickets", tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()
    st.close()


def test_cli_snapshot_restore_copy_export(base: Path, tmp_path: Path) -> None:
    a = tmp_path / "a"
    shutil.copytree(base, a)
    run = CliRunner()

    def ok(*args: str) -> str:
        r = run.invoke(cli, list(args))
        assert r.exit_code == 0, r.stderr
        return r.stdout

    assert "current v2" in ok("snapshot", "--out", str(tmp_path / "t.zip"), "--store", str(a))
    out = ok("restore", str(tmp_path / "t.zip"), "--store", str(tmp_path / "b"), "--json")
    assert json.loads(out)["counts"] == {"v1": 80, "v2": 80}
    r = run.invoke(cli, ["restore", str(tmp_path / "t.zip"), "--store", str(tmp_path / "b")])
    assert r.exit_code == 5 and "replace it" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "160 points written" in ok("copy", "--to-store", str(tmp_path / "c"), "--store", str(a))
    assert "0 points written, 160 already there" in ok("copy", "--to-store", str(tmp_path / "c"), "--store", str(a))
    r = run.invoke(cli, ["copy", "--store", str(a)])
    assert r.exit_code == 2 and "--to-store DIR or --to-qdrant-url" in r.stderr
    assert "wrote 80 examples" in ok(
        "export-data", "--output", str(tmp_path / "x.jsonl"), "--store", str(tmp_path / "c")
    )
    r = run.invoke(cli, ["export-data", "--output", str(tmp_path / "x.txt"), "--store", str(a)])
    assert r.exit_code == 2 and ".parquet" in r.stderr
    # an embedded store held by another process (e.g. `knnclass serve`) is refused clearly
    held = EdgeStore(a)
    try:
        r = run.invoke(cli, ["snapshot", "--out", str(tmp_path / "u.zip"), "--store", str(a)])
    finally:
        held.close()
    assert r.exit_code == 5 and "in use by process" in r.stderr and not (tmp_path / "u.zip").exists()


def test_label_sets_and_metadata_survive_snapshot_restore_and_copy(tmp_path: Path) -> None:
    from knnclass.store import CollectionMeta

    src = EdgeStore(tmp_path / "a")
    meta = CollectionMeta(ENC.identity, "fake", ENC.dim, payload_schema={"product": "keyword", "n": "number"})
    ref = src.create("tickets", meta)
    ex = [
        Example(
            f"e{i}", f"{t} ticket {i}", t, {"priority": "urgent"} if i % 2 else {}, {"product": "cards", "n": 1.0 * i}
        )
        for i, t in enumerate(TOPICS * 3)
    ]
    src.upsert(ref, ex, ENC.embed([e.text for e in ex]))
    snapshot(src, "tickets", tmp_path / "t.zip")
    dst = EdgeStore(tmp_path / "b")
    restore(dst, tmp_path / "t.zip")
    got = {e.id: e for batch, _ in dst.scroll(dst.ref("tickets")) for e in batch}
    assert [(got[e.id].labels, got[e.id].meta) for e in ex] == [(e.labels, e.meta) for e in ex]
    srv = _server()
    copy_collection(src, srv, "tickets")
    copied = {e.id: e for batch, _ in srv.scroll(srv.ref("tickets")) for e in batch}
    assert [(copied[e.id].labels, copied[e.id].meta) for e in ex] == [(e.labels, e.meta) for e in ex]
    for st in (src, dst, srv):
        st.close()
