"""kill -9 during snapshot, restore and copy: the target stays usable and a re-run completes.

The collections hold random unit vectors (no encoder is needed to move them); the HNSW
settings are small so the index builds (part of restore and copy) take seconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from knnclass import history
from knnclass.classifier import Classifier
from knnclass.data import Example
from knnclass.jobs.backup import ContentHash, Snapshot
from knnclass.store import CollectionMeta, Store
from knnclass.store.base import Ref
from knnclass.store.edge import EdgeStore

KNN = [sys.executable, "-m", "knnclass"]
DIM = 384
ENV = {**os.environ, "KNNCLASS_HNSW_M": "8", "KNNCLASS_HNSW_EF_CONSTRUCT": "32", "HF_HUB_OFFLINE": "1"}


def _source(path: Path, n: int) -> dict[str, str]:
    """An embedded store with two versions of `n` points and a recorded relabel; their checksums."""
    rng = np.random.default_rng(3)
    st = EdgeStore(path)
    sums = {}
    for v in ("v1", "v2"):
        ref = st.create_version("tickets", CollectionMeta("fake-x", "fake", DIM, rule={"vote": "majority"}))
        vecs = rng.standard_normal((n, DIM)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        ex = [Example(f"t-{i}", f"ticket {i} of {v}", f"label-{i % 77}") for i in range(n)]
        for i in range(0, n, 1000):
            st.upsert(ref, ex[i : i + 1000], vecs[i : i + 1000])
        st.switch("tickets", ref.version)
    Classifier(st, "tickets").relabel("t-7", "label-0", who="cli")
    for v in st.versions("tickets"):
        sums[v] = _checksum(st, Ref("tickets", v))
    st.close()
    return sums


def _checksum(st: Store, ref: Ref) -> str:
    h = ContentHash()
    for examples, vecs in st.scroll(ref, 2048, with_vectors=True):
        assert vecs is not None
        h.add(examples, vecs)
    return h.hexdigest()


def _work_s(cmd: list[str], started: Callable[[], bool]) -> float:
    """Seconds `cmd` runs to completion after `started()` first holds (a kill must land inside them)."""
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while p.poll() is None and not started():
        time.sleep(0.01)
    t0 = time.monotonic()
    assert p.wait(timeout=300) == 0
    return time.monotonic() - t0


def _kill_during(cmd: list[str], started: Callable[[], bool], rng: random.Random, work_s: float) -> bool:
    """Run `cmd`, wait until `started()` shows it at work, then SIGKILL it within its measured `work_s`.

    The kill falls at a random 5-70 % of the work, so it lands on a fast machine as on a slow one.
    """
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while p.poll() is None and not started() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.05, 0.7) * work_s)
    killed = p.poll() is None
    if killed:
        p.send_signal(signal.SIGKILL)
    p.wait()
    return killed


def _run(*args: str) -> dict[str, object]:
    r = subprocess.run([*KNN, *args, "--json"], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return dict(json.loads(r.stdout))


def _check_target(path: Path, sums: dict[str, str]) -> None:
    """The target store opens and holds exactly the source (versions, points, pointer, history)."""
    st = EdgeStore(path)
    try:
        # a restore after a killed one may renumber the versions (documented): compare by content
        cur = st.current_version("tickets")
        assert cur is not None and _checksum(st, Ref("tickets", cur)) == sums["v2"]
        others = {_checksum(st, Ref("tickets", v)) for v in st.versions("tickets") if v != cur}
        assert sums["v1"] in others
        assert [cs.kind for cs in history.change_sets(st, "tickets")] == ["relabel"]
        assert len(st.history_logs("tickets")) == 1
    finally:
        st.close()


@pytest.mark.parametrize(("n", "kills"), [(2000, 1), pytest.param(20_000, 4, marks=pytest.mark.slow)])
def test_kill_9_during_snapshot_and_restore(tmp_path: Path, n: int, kills: int) -> None:
    rng = random.Random(11)
    src = tmp_path / "src"
    sums = _source(src, n)
    snap = tmp_path / "t.zip"
    scratch = tmp_path / "scratch"  # a clean run of each command times the work a kill must land in
    snap_s = _work_s(
        [*KNN, "snapshot", "--out", str(tmp_path / "s.zip"), "--store", str(src)],
        lambda: any(tmp_path.glob(".s.zip.*.tmp")),
    )
    restore_s = _work_s(
        [*KNN, "restore", str(tmp_path / "s.zip"), "--store", str(scratch)],
        lambda: (scratch / "collections" / "tickets").exists(),
    )
    killed = 0
    for _ in range(kills):  # the file is complete or absent, never half
        killed += _kill_during(
            [*KNN, "snapshot", "--out", str(snap), "--store", str(src)],
            lambda: any(tmp_path.glob(".t.zip.*.tmp")),
            rng,
            snap_s,
        )
        assert not snap.exists() or Snapshot(snap).manifest["collection"] == "tickets"
    _run("snapshot", "--out", str(snap), "--store", str(src))
    assert not list(tmp_path.glob(".t.zip.*.tmp"))  # the temp files of killed runs are cleaned up
    dst = tmp_path / "dst"
    for _ in range(kills + 1):  # killed while writing, reading back or building the index
        killed += _kill_during(
            [*KNN, "restore", str(snap), "--store", str(dst)],
            lambda: (dst / "collections" / "tickets").exists(),
            rng,
            restore_s,
        )
        st = EdgeStore(dst)  # usable: the collection is either absent or the whole snapshot
        try:
            cur = st.current_version("tickets")
        finally:
            st.close()
        if cur is not None:
            _check_target(dst, sums)
    assert killed == 2 * kills + 1
    _run("restore", str(snap), "--store", str(dst), "--replace")
    _check_target(dst, sums)


@pytest.mark.parametrize(
    ("target", "n", "kills"),
    [
        ("edge", 2000, 1),
        pytest.param("edge", 20_000, 4, marks=pytest.mark.slow),
        # qdrant-client's local mode commits each point on its own (~20 ms): slow only
        pytest.param("server", 300, 2, marks=pytest.mark.slow),
    ],
)
def test_kill_9_during_copy_then_resume(tmp_path: Path, target: str, n: int, kills: int) -> None:
    rng = random.Random(5 if target == "edge" else 6)
    src = tmp_path / "src"
    sums = _source(src, n)
    dst = tmp_path / "dst"

    def command(to: Path) -> tuple[list[str], Callable[[], bool]]:
        if target == "edge":
            return [*KNN, "copy", "--to-store", str(to), "--store", str(src)], (
                lambda: (to / "collections" / "tickets").exists()
            )
        # the server backend on qdrant-client's persistent local mode, in a subprocess of its own
        code = (
            "import sys\nfrom qdrant_client import QdrantClient\nfrom knnclass.store.edge import EdgeStore\n"
            "from knnclass.store.server import ServerStore\nfrom knnclass.jobs.backup import copy_collection\n"
            "src, dst = EdgeStore(sys.argv[1]), ServerStore(client=QdrantClient(path=sys.argv[2]))\n"
            "print(copy_collection(src, dst, 'tickets')['written'])\ndst.close()\nsrc.close()\n"
        )
        return [sys.executable, "-c", code, str(src), str(to)], lambda: (to / "collection").exists()

    work_s = _work_s(*command(tmp_path / "scratch"))
    cmd, started = command(dst)
    killed = sum(_kill_during(cmd, started, rng, work_s) for _ in range(kills))
    assert killed >= 1
    r = subprocess.run(cmd if target == "server" else [*cmd, "--json"], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    if target == "edge":
        assert json.loads(r.stdout)["passes"] == 1
        _check_target(dst, sums)
    else:
        from qdrant_client import QdrantClient

        from knnclass.store.server import ServerStore

        assert int(r.stdout.split()[-1]) < 2 * n  # resumed
        st = ServerStore(client=QdrantClient(path=str(dst)))
        try:
            assert st.current_version("tickets") == "v2" and st.versions("tickets") == ["v1", "v2"]
            for v in sums:
                assert st.count(Ref("tickets", v)) == n
            assert [cs.kind for cs in history.change_sets(st, "tickets")] == ["relabel"]
        finally:
            st.close()
