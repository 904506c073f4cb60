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
