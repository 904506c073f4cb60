"""Run it live (#18): a served store under a steady classify load while the CLI indexes as many
examples again, re-tunes and promotes a fine-tuned version through the service.

Measures classify latency idle and during the operations (client side and the server's own time
from Server-Timing), failed requests, and the exact final count. Writes benchmarks/results/live.{json,md}.

    python benchmarks/live.py [--n 100000] [--finetune-steps 20] [--clients 2] [--idle-s 30]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import DATA, banking_csv, pct, save

from tests.integration._server import Server

KNN = [sys.executable, "-m", "knnclass"]


class Load:
    """`clients` threads each sending one single-ticket classify request, then pausing `pause_s`."""

    def __init__(self, url: str, clients: int, pause_s: float):
        with (DATA / "test.csv").open() as f:
            self.texts = [r["text"] for r in csv.DictReader(f)]
        self.url, self.clients, self.pause_s = url, clients, pause_s
        self.samples: list[tuple[float, float, float, int]] = []  # (time, client ms, server ms, status)
        self.errors: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=30) as c:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = c.post(self.url + "/v1/classify", json={"text": rng.choice(self.texts)})
                    ms = (time.perf_counter() - t0) * 1e3
                    timing = r.headers.get("server-timing", "app;dur=nan")
                    server = float(timing.split("dur=")[1].split(",")[0])
                    self.samples.append((time.time(), ms, server, r.status_code))
                except httpx.HTTPError as e:
                    self.errors.append((time.time(), type(e).__name__))
                time.sleep(self.pause_s)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        s = [x for x in self.samples if t0 <= x[0] < t1]
        ok = [x for x in s if x[3] == 200]
        client, server = [x[1] for x in ok], [x[2] for x in ok]
        return {
            "requests": len(s),
            "failed": len(s) - len(ok) + sum(t0 <= e[0] < t1 for e in self.errors),
            "client_p50_ms": round(pct(client, 50), 2) if ok else None,
            "client_p99_ms": round(pct(client, 99), 2) if ok else None,
            "server_p50_ms": round(pct(server, 50), 2) if ok else None,
            "server_p99_ms": round(pct(server, 99), 2) if ok else None,
            "max_client_ms": round(max(client), 1) if ok else None,
        }


def _cli(args: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([*KNN, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"knnclass {' '.join(args)} failed: {r.stderr[-2000:]}")
    return round(time.perf_counter() - t0, 1), r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    """Run it; the figures (also reliability.py's scenario 13)."""
    work = Path(tempfile.mkdtemp(prefix="knnclass-live-"))
    store = ["--store", str(work / "store")]
    res: dict[str, Any] = {
        "command": f"python benchmarks/live.py --n {args.n} --finetune-steps {args.finetune_steps}",
        "n": args.n,
        "clients": args.clients,
        "pause_ms": args.pause_ms,
        "idle_s": args.idle_s,
    }
    # before the service: the base collection and a fine-tuned run to promote later
    res["setup_index_s"], _ = _cli(["index", str(banking_csv(work / "base.csv", args.n)), *store])
    res["setup_tune_s"], _ = _cli(["tune", *store])
    small = banking_csv(work / "small.csv", 2000)
    ft = ["finetune", str(small), "--strategy", "full", "--epochs", "1", "--max-steps", str(args.finetune_steps)]
    res["setup_finetune_s"], _ = _cli([*ft, "--out", str(work / "run")])
    more = banking_csv(work / "more.csv", args.n, "new", mark_all=True)

    s = Server(work / "store")
    s.wait_ready(timeout=600)
    load = Load(s.url, args.clients, args.pause_ms / 1000)
    load.start()
    try:
        time.sleep(3)  # warm
        t_idle = time.time()
        time.sleep(args.idle_s)
        t_ops = time.time()
        ops: dict[str, Any] = {}
        marks = [t_ops]  # where each operation ended: the load is also reported per operation
        for name, cmd in (
            ("index", ["index", str(more), *store]),
            ("tune", ["tune", *store]),
            ("promote", ["promote", str(work / "run"), *store]),
        ):
            ops[f"{name}_s"], ops[f"{name}_out"] = _cli(cmd)
            marks.append(time.time())
        t_end = time.time()
        time.sleep(3)
        ready = httpx.get(s.url + "/readyz", timeout=30).json()
    finally:
        load.stop()
        rc = s.stop()
    idle, busy = load.window(t_idle, t_ops), load.window(t_ops, t_end)
    phases = {
        name: load.window(a, b) for name, a, b in zip(("index", "tune", "promote"), marks[:-1], marks[1:], strict=True)
    }
    res.update(
        idle=idle,
        during=busy,
        phases=phases,
        ops=ops,
        ratio_client_p99=round(busy["client_p99_ms"] / idle["client_p99_ms"], 2),
        ratio_server_p99=round(busy["server_p99_ms"] / idle["server_p99_ms"], 2),
        final_count=ready["count"],
        final_version=ready["version"],
        expected_count=2 * args.n,
        exact=ready["count"] == 2 * args.n,
        service_exit=rc,
        cpus=os.cpu_count(),
    )
    return res


def table(res: dict[str, Any]) -> str:
    i, b, ops, phases = res["idle"], res["during"], res["ops"], res["phases"]
    return "\n".join(
        [
            "## Run it live (#18)",
            "",
            f"Command: `{res['command']}` ({res['cpus']} cores, loopback). A service holds the embedded store with "
            f"{res['n']:,} examples under a steady load ({res['clients']} clients, one ticket per request, "
            f"{res['pause_ms']:g} ms between requests); meanwhile, through the CLI (which reaches the store through the "
            f"service and runs niced): `index` of {res['n']:,} more ({ops['index_s']} s, HNSW rebuilt in a child "
            f"process), `tune` ({ops['tune_s']} s), `promote` of a full fine-tune run ({ops['promote_s']} s, "
            "reindexing every example with the tuned encoder).",
            "",
            "| phase | requests | failed | client p50 / p99 ms | server p50 / p99 ms | max client ms |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| idle ({res['idle_s']:g} s) | {i['requests']} | {i['failed']} | {i['client_p50_ms']} / {i['client_p99_ms']} | "
            f"{i['server_p50_ms']} / {i['server_p99_ms']} | {i['max_client_ms']} |",
            f"| during index + tune + promote | {b['requests']} | **{b['failed']}** | {b['client_p50_ms']} / "
            f"**{b['client_p99_ms']}** | {b['server_p50_ms']} / {b['server_p99_ms']} | {b['max_client_ms']} |",
            *(
                f"| … during {name} | {p['requests']} | {p['failed']} | {p['client_p50_ms']} / {p['client_p99_ms']} | "
                f"{p['server_p50_ms']} / {p['server_p99_ms']} | {p['max_client_ms']} |"
                for name, p in phases.items()
            ),
            "",
            f"p99 during / idle: client **{res['ratio_client_p99']}×**, server {res['ratio_server_p99']}× (goal ≤ 3×); "
            f"final count {res['final_count']:,} of {res['expected_count']:,} "
            f"({'exact' if res['exact'] else 'NOT exact'}), serving {res['final_version']}.",
        ]
    )


def parser() -> argparse.ArgumentParser:
    """The scenario's arguments and their defaults (reliability.py runs it with its own --n)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000, help="examples served at the start; as many are added")
    ap.add_argument("--finetune-steps", type=int, default=20)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--pause-ms", type=float, default=50.0)
    ap.add_argument("--idle-s", type=float, default=30.0)
    return ap


def main() -> None:
    args = parser().parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = scenario(args)
    print(json.dumps(res, indent=2))
    text = table(res)
    save("live", res, text)
    print(text)


if __name__ == "__main__":
    main()
