"""Out-of-process index builds of a served embedded store: nothing written meanwhile is lost."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.errors import StoreCorruptError
from knnclass.store import CollectionMeta
from knnclass.store.base import Ref
from knnclass.store.edge import SHARD_POINTER, EdgeStore, _recover_index_build

ENC = FakeEncoder(topics=["card", "pin", "refund"])


def _ex(i: int, label: str = "card") -> Example:
    return Example(f"e{i}", f"{label} ticket number {i}", label)


def _upsert(st: EdgeStore, ref: object, examples: list[Example]) -> None:
    st.upsert(ref, examples, ENC.embed([e.text for e in examples]))  # type: ignore[arg-type]


def _all(st: EdgeStore, ref: object) -> dict[str, Example]:
    return {e.id: e for batch, _ in st.scroll(ref, 100) for e in batch}  # type: ignore[arg-type]


def _built_once(tmp_path: Path) -> tuple[EdgeStore, Ref, Path]:
    """A store of 20 examples whose index one out-of-process build swapped in (shard.1)."""
    st = EdgeStore(tmp_path / "s")
    ref = st.create("t", CollectionMeta(ENC.identity, "fake", ENC.dim))
    _upsert(st, ref, [_ex(i) for i in range(20)])
    build = st.begin_index_build(ref)
    assert subprocess.run([sys.executable, "-m", "knnclass.store._build", str(build)]).returncode == 0
    st.finish_index_build(ref, build)
    return st, ref, build


def test_build_replays_writes_made_during_it_and_swaps(tmp_path: Path) -> None:
    st = EdgeStore(tmp_path / "s")
    ref = st.create("t", CollectionMeta(ENC.identity, "fake", ENC.dim))
    _upsert(st, ref, [_ex(i) for i in range(300)])
    build = st.begin_index_build(ref)
    assert st.written[ref] == 0
    # writes while the child builds: adds, a relabel, a delete
    _upsert(st, ref, [_ex(i, "pin") for i in range(300, 340)])
    _upsert(st, ref, [Example("e5", "card ticket number 5", "refund")])
    st.delete(ref, ["e7"])
    r = subprocess.run([sys.executable, "-m", "knnclass.store._build", str(build)], capture_output=True)
    assert r.returncode == 0, r.stderr
    before = _all(st, ref)
    assert st.finish_index_build(ref, build) == 42
    after = _all(st, ref)
    assert after == before and len(after) == 339 and after["e5"].label == "refund" and "e7" not in after
    vdir = build.parent
    # the built copy is live where it was built (loaded once), named by SHARD; the replaced one is gone
    assert build.name == "shard.1" and (vdir / SHARD_POINTER).read_text() == "shard.1"
    assert sorted(p.name for p in vdir.iterdir() if p.name.startswith("shard")) == ["shard.1"]
    hits = st.search(ref, ENC.embed(["pin ticket number 301"]), 3)[0]
    assert hits[0].id == "e301"
    # the next build copies the live shard into the next generation
    again = st.begin_index_build(ref)
    _upsert(st, ref, [_ex(400, "refund")])
    assert subprocess.run([sys.executable, "-m", "knnclass.store._build", str(again)]).returncode == 0
    assert again.name == "shard.2" and st.finish_index_build(ref, again) == 1
    assert sorted(p.name for p in vdir.iterdir() if p.name.startswith("shard")) == ["shard.2"]
    st.close()
    st = EdgeStore(tmp_path / "s")  # durable across a reopen
    assert _all(st, ref) == {**before, "e400": _ex(400, "refund")}
    st.close()


def test_failed_build_leaves_the_shard_as_it_was(tmp_path: Path) -> None:
    from knnclass.errors import StoreError
    from knnclass.service.indexer import IndexBuilder

    st = EdgeStore(tmp_path / "s")
    ref = st.create("t", CollectionMeta(ENC.identity, "fake", ENC.dim))
    _upsert(st, ref, [_ex(i) for i in range(50)])

    async def write(fn: object, *args: object) -> object:
        return fn(*args)  # type: ignore[operator]

    b = IndexBuilder(st, write)
    assert asyncio.run(b.build(ref))["replayed"] == 0 and b.builds == 1
    original = st.begin_index_build
    st.begin_index_build = lambda r: (original(r), tmp_path / "nowhere")[1]  # type: ignore[method-assign]
    try:
        asyncio.run(b.build(ref))
        raise AssertionError("the build should fail")
    except StoreError as e:
        assert "failed" in str(e)
    st.begin_index_build = original  # type: ignore[method-assign]
    assert len(_all(st, ref)) == 50 and st.search(ref, ENC.embed(["card ticket number 3"]), 1)[0][0].id == "e3"
    st.close()


def test_recovery_after_a_crash_between_the_renames(tmp_path: Path) -> None:
    """Stores swapped by two renames before SHARD_POINTER: a crash between them is undone."""
    st = EdgeStore(tmp_path / "s")
    ref = st.create("t", CollectionMeta(ENC.identity, "fake", ENC.dim))
    _upsert(st, ref, [_ex(i) for i in range(20)])
    st.close()
    vdir = tmp_path / "s" / "collections" / "t" / "v1"
    (vdir / "shard").rename(vdir / "shard.old")  # the first rename happened, the second did not
    (vdir / "shard.build").mkdir()
    assert _recover_index_build(vdir) == vdir / "shard"
    assert (vdir / "shard" / "edge_config.json").exists() and not (vdir / "shard.build").exists()
    st = EdgeStore(tmp_path / "s")
    assert len(_all(st, ref)) == 20 and np.isfinite(st.search(ref, ENC.embed(["card"]), 1)[0][0].score)
    st.close()


def test_recovery_keeps_the_shard_the_pointer_names(tmp_path: Path) -> None:
    st, ref, build = _built_once(tmp_path)
    half = st.begin_index_build(ref)  # a crash while the next build runs: its copy is left behind
    st.close()
    vdir = build.parent
    (vdir / "shard").mkdir()  # and a replaced shard whose removal a crash cut short
    st = EdgeStore(tmp_path / "s")
    assert len(_all(st, ref)) == 20
    assert sorted(p.name for p in vdir.iterdir() if p.name.startswith("shard")) == ["shard.1"]
    assert not half.exists()
    st.close()
    (vdir / SHARD_POINTER).write_text("../../elsewhere")
    st = EdgeStore(tmp_path / "s")
    with pytest.raises(StoreCorruptError, match="names no shard"):
        st.count(ref)
    st.close()
    assert (vdir / "shard.1" / "edge_config.json").exists()  # a bad pointer removes nothing


def test_a_pointer_to_a_missing_shard_removes_nothing(tmp_path: Path) -> None:
    st, ref, build = _built_once(tmp_path)
    st.close()
    vdir = build.parent
    (vdir / SHARD_POINTER).write_text("shard.7")  # well-formed, but no such shard
    st = EdgeStore(tmp_path / "s")
    with pytest.raises(StoreCorruptError, match=r"shard\.7, which is not a shard"):
        st.count(ref)
    st.close()
    assert (vdir / "shard.1" / "edge_config.json").exists()  # the data the pointer lost is kept
    (vdir / SHARD_POINTER).write_text("shard.1")
    st = EdgeStore(tmp_path / "s")
    assert len(_all(st, ref)) == 20
    st.close()


def test_searches_go_on_while_the_build_copies_the_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import threading

    import knnclass.store.edge as edge

    st = EdgeStore(tmp_path / "s")
    ref = st.create("t", CollectionMeta(ENC.identity, "fake", ENC.dim))
    _upsert(st, ref, [_ex(i) for i in range(20)])
    copying, release = threading.Event(), threading.Event()
    copytree = shutil.copytree

    def slow_copy(*args: Any, **kw: Any) -> Any:
        copying.set()
        assert release.wait(10)
        return copytree(*args, **kw)

    monkeypatch.setattr(edge.shutil, "copytree", slow_copy)
    made: list[Path] = []
    t = threading.Thread(target=lambda: made.append(st.begin_index_build(ref)))
    t.start()
    try:
        assert copying.wait(10)
        done = threading.Event()
        threading.Thread(target=lambda: (st.search(ref, ENC.embed(["card"]), 3), done.set())).start()
        assert done.wait(5), "a search waited for the shard copy"
    finally:
        release.set()
        t.join()
    st.abort_index_build(ref, made[0])
    assert len(_all(st, ref)) == 20
    st.close()
