"""What a served store's searches feel when an out-of-process index build is swapped in.

A version of N random 384-d points (no encoder: the store alone) gets its index built the way
a service does it (`begin_index_build`, the `knnclass.store._build` child, 100 writes made
meanwhile, `finish_index_build`). A thread searches (top 10, one query every 2 ms) and a ticker
thread wakes every ms, from 0.5 s before the swap to 0.5 s after it. Reported: the swap's wall
time and its parts (each shard load, each directory removal), the longest search and the longest
ticker gap during it (a gap is time the GIL was held elsewhere), the same for the copy the build
starts from (`begin_index_build`), against the same figures over an idle second, in the same run.

    python benchmarks/swap.py [--n 100000]
Writes benchmarks/results/swap.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import save


def _watch(st: Any, ref: Any, q: np.ndarray, during: Any) -> dict[str, float]:
    """Longest search and longest ticker gap (ms) from 0.5 s before `during()` to 0.5 s after."""
    gaps: list[float] = []
    lat: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    def searcher() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            st.search(ref, q, 10)
            lat.append(time.perf_counter() - t)
            time.sleep(0.002)

    threads = [threading.Thread(target=ticker), threading.Thread(target=searcher)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    during()
    wall = time.perf_counter() - t0
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    return {
        "wall_ms": round(wall * 1e3, 1),
        "max_search_ms": round(max(lat) * 1e3, 1),
        "p50_search_ms": round(float(np.median(lat)) * 1e3, 2),
        "max_gap_ms": round(max(gaps) * 1e3, 1),
    }


def legacy_begin(st: Any, ref: Any) -> Path:
    """The copy before it left the store's lock (the baseline): searches waited for it."""
    import knnclass.store.edge as edge

    with st._mu:
        st._shard(ref).flush()
        live = edge._live_shard(st._vdir(ref))
        build = live.with_name(f"shard.{int(live.name.partition('.')[2] or 0) + 1}")
        shutil.rmtree(build, ignore_errors=True)
        st.check_space(need=edge._tree_bytes(live))
        shutil.copytree(live, build)
        st._journals[ref] = set()
        st.written[ref] = 0
        return build


def legacy_finish(st: Any, ref: Any, build: Path) -> int:
    """The swap before SHARD_POINTER (the baseline): replay, close, two renames, load again."""
    from qdrant_edge import EdgeShard, Point, UpdateOperation

    from knnclass.store._files import fsync_dir

    uuids = sorted(st._journals.pop(ref, set()))
    old = st._shard(ref)
    new = EdgeShard.load(str(build))
    try:
        for i in range(0, len(uuids), 64):
            recs = old.retrieve(uuids[i : i + 64], with_payload=True, with_vector=True)
            new.update(
                UpdateOperation.upsert_points([Point(id=r.id, vector=r.vector, payload=r.payload) for r in recs])
            )
        new.flush()
    finally:
        new.close()
    path = st._vdir(ref) / "shard"
    with st._mu:
        st._shards.pop(ref, None)
        old.close()
        os.replace(path, path.with_name("shard.old"))
        os.replace(build, path)
        fsync_dir(path.parent)
        shutil.rmtree(path.with_name("shard.old"), ignore_errors=True)
        st._shard(ref)
    return len(uuids)


def swap(st: Any, ref: Any, q: np.ndarray, begin: Any, finish: Any, rng: np.random.Generator) -> dict[str, Any]:
    """One out-of-process build of `ref`'s index: the shard copied by `begin`, 100 writes made
    meanwhile, swapped in by `finish`."""
    import knnclass.store.edge as edge
    from knnclass.data import Example

    n = st.count(ref)
    made: list[Path] = []
    copy = _watch(st, ref, q, lambda: made.append(begin(st, ref)))
    build = made[0]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "knnclass.store._build", str(build)], check=True)
    build_s = time.perf_counter() - t0
    ex = [Example(f"x{n + i}", "a new ticket", "l1") for i in range(100)]
    st.upsert(ref, ex, rng.normal(size=(100, 384)).astype(np.float32))
    parts: list[list[Any]] = []
    from qdrant_edge import EdgeShard

    load, rmtree = EdgeShard.load, shutil.rmtree

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                parts.append([name, round((time.perf_counter() - t) * 1e3, 1)])

        return wrapper

    EdgeShard.load = timed("load", load)  # type: ignore[method-assign]
    edge.shutil.rmtree = timed("rmtree", rmtree)  # type: ignore[attr-defined]
    try:
        during = _watch(st, ref, q, lambda: finish(st, ref, build))
    finally:
        EdgeShard.load = load  # type: ignore[method-assign]
        edge.shutil.rmtree = rmtree  # type: ignore[attr-defined]
    assert st.count(ref) == n + 100
    idle = _watch(st, ref, q, lambda: time.sleep(1.0))  # the same shard, indexed, nothing else going on
    return {"n": n, "child_build_s": round(build_s, 1), "idle": idle, "copy": copy, "swap": during, "swap_parts": parts}


def run(n: int) -> dict[str, Any]:
    import knnclass.store.edge as edge
    from knnclass.data import Example
    from knnclass.store import CollectionMeta

    root = Path(tempfile.mkdtemp(prefix="knnclass-swap-"))
    st = edge.EdgeStore(root / "s")
    ref = st.create("c", CollectionMeta("bench", "bench", 384))
    rng = np.random.default_rng(0)
    for s in range(0, n, 4096):
        m = min(n, s + 4096) - s
        ex = [Example(f"t{i}", "a ticket", f"l{i % 77}") for i in range(s, s + m)]
        st.upsert(ref, ex, rng.normal(size=(m, 384)).astype(np.float32))
    q = rng.normal(size=(1, 384)).astype(np.float32)
    out = {
        "n": n,
        "legacy": swap(st, ref, q, legacy_begin, legacy_finish, rng),
        "store": swap(
            st, ref, q, lambda st, ref: st.begin_index_build(ref), lambda st, ref, b: st.finish_index_build(ref, b), rng
        ),
    }
    st.close()
    shutil.rmtree(root, ignore_errors=True)
    return out


def render(r: dict[str, Any]) -> str:
    lines = [
        f"Command: `python benchmarks/swap.py --n {r['n']}` ({r['n']:,} random points, then 100 more per build).",
        "",
        "| build | points | copy: wall ms | copy: longest search ms | swap: wall ms | swap: longest search ms | "
        "swap: longest ticker gap ms | idle: longest search ms | search p50 ms (idle) | swap parts ≥ 1 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = (
        ("legacy", "before (copy and reload under the lock)"),
        ("store", "now (copy outside the lock; loaded once, SHARD names it)"),
    )
    for key, name in names:
        x = r[key]
        c, s, i = x["copy"], x["swap"], x["idle"]
        parts = ", ".join(f"{p} {ms}" for p, ms in x["swap_parts"] if ms >= 1) or "-"
        lines.append(
            f"| {name} | {x['n']:,} | {c['wall_ms']} | {c['max_search_ms']} | {s['wall_ms']} | {s['max_search_ms']} | "
            f"{s['max_gap_ms']} | {i['max_search_ms']} | {i['p50_search_ms']} | {parts} |"
        )
    a, b = r["legacy"], r["store"]
    lines += [
        "",
        f"Now / before: longest search during the copy {b['copy']['max_search_ms'] / a['copy']['max_search_ms']:.2f}x; "
        f"swap wall time {b['swap']['wall_ms'] / a['swap']['wall_ms']:.2f}x, longest search during it "
        f"{b['swap']['max_search_ms'] / a['swap']['max_search_ms']:.2f}x.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--name", default="swap")
    args = ap.parse_args()
    r = run(args.n)
    text = render(r)
    save(args.name, r, text)
    print(text)


if __name__ == "__main__":
    main()
