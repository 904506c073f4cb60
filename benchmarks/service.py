"""Service latency with 100k indexed examples, against the baseline a user would write.

knnclass: `knnclass serve` (int8 ONNX encoder, Qdrant Edge with HNSW) over HTTP on
loopback — sequential single-ticket classify p50/p99, then concurrent throughput.
Baseline, same run, same vectors: sentence-transformers on torch + qdrant-client local
mode, called in-process (no HTTP, which favours the baseline).

    python benchmarks/service.py [--n 100000] [--queries 500]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import banking_rows, expand_vectors, pct, save

from tests.integration._server import Server


def build_store(path: Path, n: int) -> tuple[dict[str, object], list[str]]:
    from knnclass.data import Example
    from knnclass.encoders import load_encoder
    from knnclass.store import CollectionMeta
    from knnclass.store.edge import EdgeStore
    from knnclass.voting import Rule

    rows = banking_rows()
    enc = load_encoder(None)
    t0 = time.perf_counter()
    base = enc.embed([r["text"] for r in rows])
    t_embed = time.perf_counter() - t0
    vecs = expand_vectors(base, n)
    st = EdgeStore(path)
    ref = st.create(
        "tickets", CollectionMeta(enc.identity, enc.source, enc.dim, rule=Rule("majority", "k", 4).to_dict())
    )
    t0 = time.perf_counter()
    for s in range(0, n, 2048):
        ex = [
            Example(
                f"t{i}",
                rows[i % len(rows)]["text"] + (f" [v{i // len(rows)}]" if i >= len(rows) else ""),
                rows[i % len(rows)]["category"],
            )
            for i in range(s, min(n, s + 2048))
        ]
        st.upsert(ref, ex, vecs[s : s + len(ex)])
    t_upsert = time.perf_counter() - t0
    t0 = time.perf_counter()
    st.optimize(ref)
    t_hnsw = time.perf_counter() - t0
    st.close()
    return {"embed_13k_s": round(t_embed, 1), "upsert_s": round(t_upsert, 1), "hnsw_build_s": round(t_hnsw, 1)}, [
        r["text"] for r in rows
    ]


def measure_http(store: Path, queries: list[str], concurrency: int, seconds: float) -> dict[str, float]:
    s = Server(store, "--max-in-flight", str(concurrency))  # every concurrent client admitted
    s.wait_ready(120)
    try:
        lat = []
        with httpx.Client(timeout=30) as c:
            for q in queries[:50]:  # warm-up
                c.post(s.url + "/v1/classify", json={"text": q})
            for q in queries:
                t0 = time.perf_counter()
                r = c.post(s.url + "/v1/classify", json={"text": q})
                lat.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
        done = [0]
        stop = time.perf_counter() + seconds
        lock = threading.Lock()

        def worker(offset: int) -> None:
            i = offset
            with httpx.Client(timeout=30) as c:
                while time.perf_counter() < stop:
                    assert c.post(s.url + "/v1/classify", json={"text": queries[i % len(queries)]}).status_code == 200
                    i += concurrency
                    with lock:
                        done[0] += 1

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rps = done[0] / (time.perf_counter() - t0)
    finally:
        s.stop()
    return {
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "mean_ms": float(np.mean(lat)) * 1e3,
        "concurrent_rps": rps,
        "concurrency": concurrency,
    }


def measure_baseline(n: int, queries: list[str], n_queries: int) -> dict[str, float]:
    from qdrant_client import QdrantClient, models
    from sentence_transformers import SentenceTransformer

    from knnclass.encoders import default_model_dir

    st = SentenceTransformer(str(default_model_dir()), device="cpu")
    rows = banking_rows()
    base = st.encode([r["text"] for r in rows], batch_size=64, normalize_embeddings=True)
    vecs = expand_vectors(np.asarray(base, dtype=np.float32), n)
    client = QdrantClient(location=":memory:")
    client.create_collection(
        "tickets", vectors_config=models.VectorParams(size=vecs.shape[1], distance=models.Distance.COSINE)
    )
    t0 = time.perf_counter()
    for s in range(0, n, 2048):
        client.upsert(
            "tickets",
            points=[
                models.PointStruct(id=i, vector=vecs[i].tolist(), payload={"label": rows[i % len(rows)]["category"]})
                for i in range(s, min(n, s + 2048))
            ],
        )
    t_upsert = time.perf_counter() - t0
    lat = []
    for q in queries[:n_queries]:
        t0 = time.perf_counter()
        v = st.encode(q, normalize_embeddings=True)
        hits = client.query_points("tickets", query=v.tolist(), limit=4, with_payload=["label"]).points
        labels = [h.payload["label"] for h in hits if h.payload]
        max(set(labels), key=labels.count)
        lat.append(time.perf_counter() - t0)
    return {
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "mean_ms": float(np.mean(lat)) * 1e3,
        "rps_one_thread": 1000 / (float(np.mean(lat)) * 1e3),
        "upsert_s": round(t_upsert, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--baseline-queries", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="knnclass-svc-bench-"))
    build, texts = build_store(work / "store", args.n)
    rng = np.random.default_rng(1)
    queries = [texts[i] + " please" for i in rng.choice(len(texts), size=args.queries, replace=False)]
    ours = measure_http(work / "store", queries, args.concurrency, 10.0)
    base = measure_baseline(args.n, queries, args.baseline_queries)
    result = {
        "n_indexed": args.n,
        "build": build,
        "knnclass_http": ours,
        "baseline_in_process": base,
        "speedup_p50": base["p50_ms"] / ours["p50_ms"],
        "speedup_p99": base["p99_ms"] / ours["p99_ms"],
        "throughput_ratio": ours["concurrent_rps"] / base["rps_one_thread"],
        "cpu_count": os.cpu_count(),
        "command": f"python benchmarks/service.py --n {args.n} --queries {args.queries}",
    }
    print(json.dumps(result, indent=2))
    table = "\n".join(
        [
            f"100k-scale service benchmark ({args.n:,} indexed; {args.queries} sequential single-ticket requests over HTTP; "
            f"{os.cpu_count()} cores). Command: `{result['command']}`",
            "",
            "| path | p50 ms | p99 ms | throughput |",
            "| --- | --- | --- | --- |",
            f"| knnclass serve (HTTP, int8 ONNX + Qdrant Edge HNSW) | **{ours['p50_ms']:.2f}** | **{ours['p99_ms']:.2f}** | "
            f"{ours['concurrent_rps']:.0f} req/s ({args.concurrency} clients) |",
            f"| baseline: sentence-transformers torch + qdrant-client local, in-process | {base['p50_ms']:.2f} | "
            f"{base['p99_ms']:.2f} | {base['rps_one_thread']:.1f} req/s (1 thread) |",
            f"| **ratio** | **{result['speedup_p50']:.1f}×** | **{result['speedup_p99']:.1f}×** | "
            f"**{result['throughput_ratio']:.1f}×** |",
            "",
            f"Store build: embed 13,083 texts {build['embed_13k_s']} s, upsert {args.n:,} {build['upsert_s']} s, "
            f"HNSW build {build['hnsw_build_s']} s. Goal: p50 ≤ 6 ms, p99 ≤ 15 ms, ≥ 10× the baseline.",
        ]
    )
    save("service", result, table)
    print(table)


if __name__ == "__main__":
    main()
