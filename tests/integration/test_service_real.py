"""The service with the real encoder and real processes: SIGTERM, kill -9, heavy adds."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ._server import Server, kill_9_during_live_adds, livez_while_adding, sigterm_under_load

pytestmark = pytest.mark.usefixtures("real_encoder")


@pytest.fixture(scope="module")
def base_store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, real_encoder) -> Path:  # type: ignore[no-untyped-def]
    """A tuned store of 1,000 Banking77 tickets, copied by each test."""
    d = tmp_path_factory.mktemp("svc")
    rows = list(csv.DictReader((data_dir / "train.csv").open()))[::10]
    src = d / "train.csv"
    with src.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows(rows)
    store = d / "store"
    for args in (["index", str(src)], ["tune"]):
        r = subprocess.run(
            [sys.executable, "-m", "knnclass", *args, "--store", str(store)], capture_output=True, timeout=300
        )
        assert r.returncode == 0, r.stderr
    return store


@pytest.fixture()
def store(base_store: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(base_store, dst)
    return dst


def test_real_encoder_through_the_app_without_torch(store: Path) -> None:
    code = f"""
import sys
from fastapi.testclient import TestClient
from knnclass.cli._common import open_classifier
from knnclass.service import create_app
clf = open_classifier(store={str(store)!r}, collection="tickets")
with TestClient(create_app(clf)) as c:
    r = c.post("/v1/classify", json={{"text": "I lost my card, please block it"}})
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["label"] in ("lost_or_stolen_card", "card_swallowed", "compromised_card"), p["label"]
    assert len(p["neighbours"]) >= 1
bad = [m for m in ("torch", "sentence_transformers", "transformers", "optimum") if m in sys.modules]
assert not bad, bad
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok")


def test_sigterm_drains_in_flight_requests(store: Path) -> None:
    s = Server(store, "--max-in-flight", "32")  # all 12 requests admitted, then drained
    s.wait_ready()
    results = sigterm_under_load(s, 12, ["my transfer has not arrived"] * 64)
    err = s.proc.stderr.read().decode() if s.proc.stderr else ""
    assert results == [200] * 12, results
    assert "store flushed and closed" in err
    s2 = Server(store)  # reopens cleanly: the lock was released, data intact
    s2.wait_ready()
    assert httpx.get(s2.url + "/readyz").json()["count"] == 1001
    s2.stop()


def test_kill_9_during_live_adds_keeps_every_acknowledged_add(store: Path) -> None:
    r = kill_9_during_live_adds(store, writers=1, seconds=3, batch=16, min_acked=32)
    assert len(r["acknowledged"]) >= 32
    assert r["missing"] == []
    assert r["count"] >= 1001 + len(r["acknowledged"])


def test_livez_stays_responsive_while_examples_are_added(store: Path, data_dir: Path) -> None:
    s = Server(store)
    s.wait_ready()
    rows = list(csv.DictReader((data_dir / "test.csv").open()))
    live = livez_while_adding(s, rows, 2048)
    lat = live["latencies"]
    ready = httpx.get(s.url + "/readyz").json()
    assert s.stop() in (0, -signal.SIGTERM)
    assert ready["count"] == 1001 + 2048
    assert len(lat) > 20 and live["failed_probes"] == 0
    assert max(lat) < 2.0  # never frozen (the benchmark holds the p99 goal)


def test_workers_need_the_server_backend(store: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "knnclass", "serve", "--store", str(store), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )
    assert r.returncode != 0 and "--workers > 1 needs the server backend" in r.stderr


def test_app_factory_reads_the_environment(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from knnclass.service.factory import app_from_env

    monkeypatch.setenv("KNNCLASS_STORE", str(store))
    monkeypatch.setenv("KNNCLASS_READ_KEY", "r-key")
    monkeypatch.setenv("KNNCLASS_API_KEY", "w-key")
    with TestClient(app_from_env()) as c:
        assert c.post("/v1/classify", json={"text": "card not working"}).status_code == 401
        r = c.post("/v1/classify", json={"text": "card not working"}, headers={"X-API-Key": "r-key"})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"]
        assert c.delete("/v1/examples/nope", headers={"X-API-Key": "r-key"}).status_code == 403
