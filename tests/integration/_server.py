"""Start `knnclass serve` as a real process on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Server", "kill_9_during_live_adds", "livez_while_adding", "sigterm_under_load"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A `knnclass serve` subprocess; `url` is its base address; `cpus` pins it (Linux)."""

    def __init__(self, store: Path, *args: str, env: dict[str, str] | None = None, cpus: set[int] | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "knnclass", "serve", "--store", str(store), "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited: {self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ''}"
                )
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server not ready")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def kill_9_during_live_adds(
    store: Path, writers: int, seconds: float, batch: int = 8, min_acked: int = 0
) -> dict[str, Any]:
    """Start a server, add examples from `writers` threads, SIGKILL it after `seconds` (and once
    at least `min_acked` adds were acknowledged, on a slow machine), restart it and look up every
    add that was acknowledged (2xx) before the kill."""
    s = Server(store)
    s.wait_ready()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int) -> None:
        i = 0
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                examples = [
                    {"id": f"live{w}-{i + j}", "text": f"new ticket {w}/{i + j} about my card", "label": "card_arrival"}
                    for j in range(batch)
                ]
                try:
                    r = c.post(s.url + "/v1/examples", json={"examples": examples})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    with lock:
                        acked.extend(e["id"] for e in examples)
                i += batch

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    deadline = time.monotonic() + 120
    while len(acked) < min_acked and time.monotonic() < deadline and any(t.is_alive() for t in threads):
        time.sleep(0.05)
    s.proc.kill()  # SIGKILL mid-write
    s.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    t0 = time.perf_counter()
    s = Server(store)
    s.wait_ready()
    ready_s = time.perf_counter() - t0
    with httpx.Client(timeout=30) as c:
        missing = [i for i in acked if c.get(f"{s.url}/v1/examples/{i}").status_code != 200]
        count = int(c.get(s.url + "/readyz").json()["count"])
    s.stop()
    return {"acknowledged": acked, "missing": missing, "restart_ready_s": ready_s, "count": count}


def livez_while_adding(s: Server, rows: list[dict[str, str]], n: int, batch: int = 256) -> dict[str, Any]:
    """Probe /livez every 10 ms while `n` examples (texts of `rows`, made unique) are added
    over HTTP in batches; returns the probe latencies, failed probes and the adding time."""
    lat: list[float] = []
    failed = [0]
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=10) as c:
            while not done.is_set():
                t0 = time.perf_counter()
                ok = c.get(s.url + "/livez").status_code == 200
                lat.append(time.perf_counter() - t0)
                failed[0] += not ok
                time.sleep(0.01)

    th = threading.Thread(target=probe)
    th.start()
    t0 = time.perf_counter()
    try:
        with httpx.Client(timeout=120) as c:
            for b in range(0, n, batch):
                ex = [
                    {"text": f"{rows[i % len(rows)]['text']} [live {i}]", "label": rows[i % len(rows)]["category"]}
                    for i in range(b, min(b + batch, n))
                ]
                r = c.post(s.url + "/v1/examples", json={"examples": ex})
                assert r.status_code == 200, r.text
    finally:
        done.set()
        th.join()
    return {"latencies": lat, "failed_probes": failed[0], "add_s": time.perf_counter() - t0}


def sigterm_under_load(s: Server, n: int, texts: list[str]) -> list[int | str]:
    """Send `n` concurrent classify calls over connections opened beforehand, SIGTERM the
    server while they are in flight, and return each call's status code (or error name)."""
    results: list[int | str] = []
    ready = threading.Barrier(n + 1)

    def call() -> None:
        with httpx.Client(timeout=60) as c:
            c.get(s.url + "/livez")  # the connection is open before the burst
            ready.wait()
            try:
                results.append(c.post(s.url + "/v1/classify", json={"texts": texts}).status_code)
            except httpx.HTTPError as e:
                results.append(type(e).__name__)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(0.3)  # the requests are read and queued
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    s.proc.wait(60)
    return results
