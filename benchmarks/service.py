"""Service latency and overhead, against the in-process library and the baseline a user would write.

One run, one store: `Classifier.classify` in-process (the floor the service adds to), then
`knnclass serve` over HTTP on loopback: sequential single-ticket classify with the client's
and the service's own time (Server-Timing) p50/p99, then concurrent throughput with the
engine's micro-batching next to the encoder's bulk rate. Baseline, same run, same vectors:
sentence-transformers on torch + qdrant-client local mode, called in-process (no HTTP,
which favours the baseline).

    python benchmarks/service.py [--n 100000] [--queries 500]
    python benchmarks/service.py --n 10003 --tune --name service-10k   # Banking77 as is, tuned rule
"""

from __future__ import annotations

import argparse
import asyncio
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


def build_store(path: Path, n: int, tune: bool = False) -> tuple[dict[str, object], list[str]]:
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
    t_tune = 0.0
    if tune:  # the served path with calibration and the novelty model, as `knnclass tune` leaves it
        from knnclass.classifier import Classifier

        t0 = time.perf_counter()
        Classifier(st, "tickets", encoder=enc).tune()
        t_tune = time.perf_counter() - t0
    st.close()
    build = {"embed_13k_s": round(t_embed, 1), "upsert_s": round(t_upsert, 1), "hnsw_build_s": round(t_hnsw, 1)}
    return {**build, "tune_s": round(t_tune, 1)}, [r["text"] for r in rows]


def measure_in_process(store: Path, queries: list[str]) -> dict[str, float]:
    """The library alone: Classifier.classify of one ticket, and the encoder's bulk rate."""
    from knnclass.classifier import Classifier, encoder_loader
    from knnclass.store.edge import EdgeStore

    st = EdgeStore(store)
    try:
        clf = Classifier(st, "tickets", encoder_loader=encoder_loader())
        for q in queries[:50]:
            clf.classify([q])
        lat = []
        for q in queries:
            t0 = time.perf_counter()
            clf.classify([q])
            lat.append(time.perf_counter() - t0)
        enc = clf.encoder_for(clf.meta())
        t0 = time.perf_counter()
        for i in range(0, len(queries), 64):
            enc.embed(queries[i : i + 64])
        bulk = len(queries) / (time.perf_counter() - t0)
    finally:
        st.close()
    return {"p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3, "encoder_bulk_per_s": bulk}


def _server_ms(r: httpx.Response) -> float:
    """The service's own time for a request, from its Server-Timing header (app;dur=MS)."""
    head = r.headers.get("server-timing", "")
    return float(head.split("dur=")[1].split(",")[0].split(";")[0])


def measure_http(store: Path, queries: list[str], concurrency: int, seconds: float) -> dict[str, float]:
    """Sequential latency (client and server side), then `concurrency` clients for `seconds`."""
    s = Server(store, "--max-in-flight", str(concurrency * 4))  # every concurrent client admitted
    s.wait_ready(120)
    try:
        lat, server = [], []
        with httpx.Client(timeout=30) as c:
            for q in queries[:50]:  # warm-up
                c.post(s.url + "/v1/classify", json={"text": q})
            for q in queries:
                t0 = time.perf_counter()
                r = c.post(s.url + "/v1/classify", json={"text": q})
                lat.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
                server.append(_server_ms(r) / 1e3)
        rps_httpx = _httpx_load(s.url, queries, concurrency, seconds)
        rps, load_lat = asyncio.run(_raw_load(s.port, queries, concurrency * 4, seconds))
    finally:
        s.stop()
    return {
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "mean_ms": float(np.mean(lat)) * 1e3,
        "server_p50_ms": pct(server, 50) * 1e3,
        "server_p99_ms": pct(server, 99) * 1e3,
        "concurrent_rps": rps,
        "concurrent_p50_ms": pct(load_lat, 50) * 1e3,
        "concurrent_p99_ms": pct(load_lat, 99) * 1e3,
        "connections": concurrency * 4,
        "concurrent_rps_httpx_threads": rps_httpx,
        "concurrency": concurrency,
    }


def _httpx_load(url: str, queries: list[str], concurrency: int, seconds: float) -> float:
    """Requests/s from `concurrency` httpx client threads (the load generator shares the cores)."""
    done = [0]
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def worker(offset: int) -> None:
        i = offset
        with httpx.Client(timeout=30) as c:
            while time.perf_counter() < stop:
                assert c.post(url + "/v1/classify", json={"text": queries[i % len(queries)]}).status_code == 200
                i += concurrency
                with lock:
                    done[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.perf_counter() - t0)


async def _raw_load(port: int, queries: list[str], connections: int, seconds: float) -> tuple[float, list[float]]:
    """Requests/s and latencies from `connections` keep-alive connections driven by one asyncio
    loop writing prebuilt requests: a load generator that costs the shared cores little, so
    the figure is the service's capacity rather than the client's."""
    reqs = []
    for q in queries:
        body = json.dumps({"text": q, "include_neighbours": False}).encode()
        head = f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        reqs.append(head.encode() + body)
    stop = time.perf_counter() + seconds
    lat: list[float] = []

    async def conn(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            writer.write(reqs[i % len(reqs)])
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head[:80]
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            i += connections
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(conn(k) for k in range(connections)))
    return len(lat) / (time.perf_counter() - t0), lat


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
    ap.add_argument("--tune", action="store_true", help="Tune the collection (calibration, novelty) first.")
    ap.add_argument("--no-baseline", action="store_true", help="Skip the sentence-transformers baseline.")
    ap.add_argument("--name", default="service", help="Results file name under benchmarks/results/.")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="knnclass-svc-bench-"))
    build, texts = build_store(work / "store", args.n, args.tune)
    rng = np.random.default_rng(1)
    queries = [texts[i] + " please" for i in rng.choice(len(texts), size=args.queries, replace=False)]
    lib = measure_in_process(work / "store", queries)
    ours = measure_http(work / "store", queries, args.concurrency, 10.0)
    base = None if args.no_baseline else measure_baseline(args.n, queries, args.baseline_queries)
    result: dict[str, object] = {
        "n_indexed": args.n,
        "tuned": args.tune,
        "build": build,
        "in_process": lib,
        "knnclass_http": ours,
        "server_over_in_process_p50": ours["server_p50_ms"] / lib["p50_ms"],
        "client_p99_over_p50": ours["p99_ms"] / ours["p50_ms"],
        "cpu_count": os.cpu_count(),
        "command": "python benchmarks/service.py " + " ".join(sys.argv[1:]),
    }
    rows = [
        f"| `Classifier.classify` in-process (the floor) | {lib['p50_ms']:.2f} | {lib['p99_ms']:.2f} | "
        f"encoder bulk {lib['encoder_bulk_per_s']:.0f} texts/s (batches of 64) |",
        f"| knnclass serve, service's own time (Server-Timing) | **{ours['server_p50_ms']:.2f}** | "
        f"{ours['server_p99_ms']:.2f} | – |",
        f"| knnclass serve, client side (httpx, keep-alive, one at a time) | **{ours['p50_ms']:.2f}** | "
        f"**{ours['p99_ms']:.2f}** | {ours['concurrent_rps_httpx_threads']:.0f} req/s ({args.concurrency} httpx threads) |",
        f"| knnclass serve under load ({ours['connections']} keep-alive connections, one asyncio client) | "
        f"{ours['concurrent_p50_ms']:.2f} | {ours['concurrent_p99_ms']:.2f} | **{ours['concurrent_rps']:.0f} req/s** "
        "(micro-batched) |",
    ]
    if base is not None:
        result |= {
            "baseline_in_process": base,
            "speedup_p50": base["p50_ms"] / ours["p50_ms"],
            "speedup_p99": base["p99_ms"] / ours["p99_ms"],
            "throughput_ratio": ours["concurrent_rps"] / base["rps_one_thread"],
        }
        rows += [
            f"| baseline: sentence-transformers torch + qdrant-client local, in-process | {base['p50_ms']:.2f} | "
            f"{base['p99_ms']:.2f} | {base['rps_one_thread']:.1f} req/s (1 thread) |",
            f"| **ratio (baseline / knnclass client side)** | **{result['speedup_p50']:.1f}×** | "
            f"**{result['speedup_p99']:.1f}×** | **{result['throughput_ratio']:.1f}×** |",
        ]
    print(json.dumps(result, indent=2))
    tuned = "tuned rule (calibration + novelty model)" if args.tune else "fixed rule majority k=4"
    table = "\n".join(
        [
            f"Service benchmark ({args.n:,} indexed, {tuned}; {args.queries} sequential single-ticket requests over "
            f"HTTP; {os.cpu_count()} cores). Command: `{result['command']}`",
            "",
            "| path | p50 ms | p99 ms | throughput |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
            f"Service time / in-process p50: **{result['server_over_in_process_p50']:.2f}×**; client p99 / p50: "
            f"{result['client_p99_over_p50']:.1f}×. Store build: embed 13,083 texts {build['embed_13k_s']} s, upsert "
            f"{args.n:,} {build['upsert_s']} s, HNSW build {build['hnsw_build_s']} s"
            + (f", tune {build['tune_s']} s" if args.tune else "")
            + ".",
        ]
    )
    save(args.name, result, table)
    print(table)


if __name__ == "__main__":
    main()
