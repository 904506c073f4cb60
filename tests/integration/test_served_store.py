"""Every command works while `knnclass serve` holds the embedded store: it goes through the service.

A real service process (real MiniLM, real Qdrant Edge) on a small Banking77 slice; the CLI runs
in this process, finds the service from the store's .service.json and drives the store through
the admin route. The service keeps answering and follows every version switch.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from knnclass.cli import cli
from knnclass.errors import StoreLockedError
from knnclass.store import open_store
from knnclass.store.remote import SERVICE_FILE, RemoteStore

from ._server import Server

LABELS = ("card_arrival", "card_linking", "exchange_rate", "lost_or_stolen_card", "top_up_failed")


def _slice(src: Path, dst: Path, per_label: int, skip: int = 0) -> None:
    seen: dict[str, int] = {}
    with src.open() as f, dst.open("w", newline="") as g:
        w = csv.writer(g)
        w.writerow(["id", "text", "category"])
        for i, row in enumerate(csv.DictReader(f)):
            n = seen.get(row["category"], 0)
            if row["category"] in LABELS and skip <= n < skip + per_label:
                w.writerow([f"{src.stem}-{i}", row["text"], row["category"]])
            seen[row["category"]] = n + 1


@pytest.fixture()
def served(tmp_path: Path, data_dir: Path, encoder_cache: Path) -> tuple[Server, list[str], Path]:
    _slice(data_dir / "train.csv", tmp_path / "train.csv", 30)
    _slice(data_dir / "train.csv", tmp_path / "more.csv", 10, skip=30)
    _slice(data_dir / "test.csv", tmp_path / "test.csv", 8)
    store = ["--store", str(tmp_path / "store")]
    r = CliRunner()
    res = r.invoke(cli, ["index", str(tmp_path / "train.csv"), "--id-col", "id", *store])
    assert res.exit_code == 0, res.output
    s = Server(tmp_path / "store")
    s.wait_ready()
    yield s, store, tmp_path
    assert s.stop() in (0, -15)  # uvicorn re-raises the SIGTERM it handled
    assert not (tmp_path / "store" / SERVICE_FILE).exists()  # removed on a clean stop


def _ok(args: list[str]) -> str:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, f"{args}: {res.output}"
    return str(res.output)


def test_every_command_works_through_the_service(served: tuple[Server, list[str], Path]) -> None:
    s, store, d = served
    info = json.loads((d / "store" / SERVICE_FILE).read_text())
    assert stat.S_IMODE(os.stat(d / "store" / SERVICE_FILE).st_mode) == 0o600 and info["pid"] == s.proc.pid
    with open_store(str(d / "store")) as st:
        assert isinstance(st, RemoteStore)

    # reads
    assert "count      150" in _ok(["info", *store])
    assert "tickets" in _ok(["collections", *store])
    # writes: tune, index more, re-tune
    _ok(["tune", *store])
    _ok(["index", str(d / "more.csv"), "--id-col", "id", *store])
    assert "count      200" in _ok(["info", *store])
    _ok(["tune", *store])
    out = json.loads(_ok(["classify", "my new card has still not arrived", "--json", *store]))
    assert out["predictions"][0]["label"] == "card_arrival"
    m = json.loads(_ok(["evaluate", str(d / "test.csv"), "--json", *store]))
    assert m["n"] == 40 and m["accuracy"] > 0.8
    _ok(["report", str(d / "test.csv"), "--out", str(d / "report"), *store])
    assert (d / "report" / "report.md").exists()
    _ok(["suspects", *store])
    _ok(["duplicates", *store])
    _ok(["drift", str(d / "test.csv"), *store])
    _ok(["classify", "--input", str(d / "test.csv"), "--output", str(d / "pred.csv"), *store])
    # a relabel through the CLI is in the service's history and visible over HTTP at once
    _ok(["snapshot", "--out", str(d / "snap.zip"), *store])
    _ok(["export-data", "--output", str(d / "export.jsonl"), *store])
    assert len((d / "export.jsonl").read_text().splitlines()) == 200

    # promote a transfer run (new version), roll back, prune: the service follows each switch
    run = d / "run"
    _ok(["finetune", str(d / "train.csv"), "--strategy", "transfer", "--out", str(run)])
    _ok(["promote", str(run), *store])
    assert httpx.get(s.url + "/readyz").json()["version"] == "v2"
    _ok(["rollback", *store])
    assert httpx.get(s.url + "/readyz").json()["version"] == "v1"
    assert "dropped v2" in _ok(["prune", *store])
    r = httpx.post(s.url + "/v1/classify", json={"text": "my card has not arrived"})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "card_arrival"
    assert httpx.get(s.url + "/readyz").json()["count"] == 200


def test_suspects_apply_and_undo_through_the_service(served: tuple[Server, list[str], Path]) -> None:
    s, store, d = served
    # a deliberately wrong label, found and fixed by suspects --apply through the service
    ex = {"id": "wrong-1", "text": "my card still has not arrived after two weeks", "label": "exchange_rate"}
    assert httpx.post(s.url + "/v1/examples", json={"examples": [ex]}).status_code == 200
    _ok(["tune", *store])
    out = json.loads(_ok(["suspects", "--json", "--template", str(d / "fix.csv"), *store]))
    assert "wrong-1" in {x["id"] for x in out}
    (d / "apply.csv").write_text("id,label\nwrong-1,card_arrival\n")
    _ok(["suspects", "--apply", str(d / "apply.csv"), *store])
    assert httpx.get(s.url + "/v1/examples/wrong-1").json()["label"] == "card_arrival"
    assert "card_arrival" in _ok(["history", "wrong-1", *store])
    _ok(["undo", *store])
    assert httpx.get(s.url + "/v1/examples/wrong-1").json()["label"] == "exchange_rate"


def test_locked_without_service_fails_clearly_and_wait_waits(tmp_path: Path) -> None:
    from knnclass.store.edge import EdgeStore

    holder = EdgeStore(tmp_path / "st")
    try:
        with pytest.raises(StoreLockedError, match="in use by process"):
            open_store(str(tmp_path / "st"), wait_s=0.3)
        res = CliRunner().invoke(cli, ["info", "--store", str(tmp_path / "st"), "--wait", "0.2"])
        assert res.exit_code != 0 and "in use by process" in res.output and "Traceback" not in res.output
    finally:
        holder.close()
    import threading

    holder = EdgeStore(tmp_path / "st")
    threading.Timer(0.5, holder.close).start()
    with open_store(str(tmp_path / "st"), wait_s=20) as st:  # waits for the lock, then opens it itself
        assert not isinstance(st, RemoteStore)


def _wait_job(s: Server, job_id: str, timeout: float = 300) -> dict:  # type: ignore[type-arg]
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = httpx.get(f"{s.url}/v1/jobs/{job_id}").json()
        if j["state"] in ("done", "failed", "cancelled"):
            return j  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise TimeoutError(job_id)


def test_admin_jobs_index_tune_promote_rollback_and_resume(tmp_path: Path, data_dir: Path, encoder_cache: Path) -> None:
    _slice(data_dir / "train.csv", tmp_path / "train.csv", 30)
    _slice(data_dir / "train.csv", tmp_path / "more.csv", 40, skip=30)
    store = ["--store", str(tmp_path / "store")]
    assert CliRunner().invoke(cli, ["index", str(tmp_path / "train.csv"), "--id-col", "id", *store]).exit_code == 0
    s = Server(tmp_path / "store", "--import-dir", str(tmp_path))
    s.wait_ready()
    try:
        # a server-side file under the import dir; anything outside it is refused
        r = httpx.post(s.url + "/v1/jobs/index", json={"path": "/etc/passwd"})
        assert r.status_code == 403 and "outside" in r.json()["error"]["message"]
        r = httpx.post(s.url + "/v1/jobs/index", json={"path": "more.csv", "id_col": "id"})
        assert r.status_code == 202, r.text
        j = _wait_job(s, r.json()["id"])
        assert j["state"] == "done", j
        assert j["progress"] == {"done": 200, "total": 200, "stage": "indexing"}
        assert httpx.get(s.url + "/readyz").json()["count"] == 350
        # an upload, into another collection of the same service
        body = (tmp_path / "train.csv").read_bytes()
        r = httpx.post(
            s.url + "/v1/collections/other/jobs/index/upload",
            params={"filename": "t.csv", "id_col": "id"},
            content=body,
        )
        assert r.status_code == 202, r.text
        assert _wait_job(s, r.json()["id"])["state"] == "done"
        assert httpx.get(s.url + "/v1/collections/other/info").json()["count"] == 150
        # tune, then promote a transfer run and roll it back
        r = httpx.post(s.url + "/v1/jobs/tune", json={"target_accuracy": 0.5, "target_confidence": 0.3})
        assert r.status_code == 422 and "target_confidence" in r.text  # refused before a job is made
        r = httpx.post(s.url + "/v1/jobs/tune", json={"unknown_weight": 1.0})
        assert r.status_code == 422 and "unknown_weight" in r.text
        target = {"target_accuracy": 0.5, "target_confidence": 0.8}
        assert _wait_job(s, httpx.post(s.url + "/v1/jobs/tune", json=target).json()["id"])["state"] == "done"
        assert "80 % lower bound" in httpx.get(s.url + "/v1/info").json()["tuning"]["point"]["objective"]
        r = httpx.post(s.url + "/v1/classify", json={"text": "my card has not arrived"})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "card_arrival"
        _ok(["finetune", str(tmp_path / "train.csv"), "--strategy", "transfer", "--out", str(tmp_path / "run")])
        j = _wait_job(s, httpx.post(s.url + "/v1/jobs/promote", json={"run_dir": "run"}).json()["id"])
        assert j["state"] == "done", j
        assert httpx.get(s.url + "/readyz").json()["version"] == "v2"
        assert httpx.post(s.url + "/v1/admin/rollback").json()["to"] == "v1"
        # a failing job says why
        j = _wait_job(
            s, httpx.post(s.url + "/v1/jobs/tune", json={"validation": "more.csv", "unknown_label": "x"}).json()["id"]
        )
        assert j["state"] == "failed" and "unknown" in j["error"]
        # a job interrupted by a crash runs again when the service restarts, and completes exactly
        _slice(data_dir / "train.csv", tmp_path / "big.csv", 40, skip=70)
        r = httpx.post(s.url + "/v1/jobs/index", json={"path": "big.csv", "id_col": "id", "batch_size": 16})
        job_id = r.json()["id"]
        import time

        while httpx.get(f"{s.url}/v1/jobs/{job_id}").json()["state"] != "running":
            time.sleep(0.2)
        s.proc.kill()
        s.proc.wait()
    finally:
        s.stop()
    s = Server(tmp_path / "store", "--import-dir", str(tmp_path))
    s.wait_ready()
    try:
        j = _wait_job(s, job_id)
        assert j["state"] == "done" and j["attempts"] == 2, j
        big = len((tmp_path / "big.csv").read_text().splitlines()) - 1
        assert httpx.get(s.url + "/readyz").json()["count"] == 350 + big
        assert httpx.get(s.url + "/v1/jobs").json()["jobs"][0]["id"] == job_id
        r = httpx.delete(f"{s.url}/v1/jobs/{job_id}")
        assert r.status_code == 200 and r.json()["state"] == "done"  # a finished job stays as it was
    finally:
        s.stop()
