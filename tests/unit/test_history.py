"""Label history and undo on both backends (the server one through qdrant-client's local mode)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from knnclass import history
from knnclass.classifier import Classifier
from knnclass.cli import cli
from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.errors import ChangeNotFoundError, ExampleNotFoundError, HistoryConflictError, StoreError
from knnclass.reports import apply_relabels
from knnclass.service import ServiceSettings, create_app
from knnclass.store.edge import EdgeStore
from knnclass.store.server import ServerStore

from ._stores import BACKENDS, make_store

TOPICS = ["card", "transfer", "pin", "refund"]
ENC = FakeEncoder(topics=TOPICS)


@pytest.fixture(params=BACKENDS)
def clf(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Classifier]:
    st = make_store(request.param, tmp_path)
    c = Classifier(st, "tickets", encoder=ENC)
    c.index([Example(f"{t}-{i}", f"{t} ticket {i}", t) for t in TOPICS for i in range(10)])
    yield c
    st.close()


def _state(c: Classifier) -> dict[str, tuple[str, str, bytes]]:
    """Every stored example with its vector bytes."""
    out = {}
    for examples, vecs in c.store.scroll(c.ref(), 64, with_vectors=True):
        assert vecs is not None
        for e, v in zip(examples, vecs, strict=True):
            out[e.id] = (e.text, e.label, v.tobytes())
    return out


def _same_state(a: dict[str, tuple[str, str, bytes]], b: dict[str, tuple[str, str, bytes]], exact: bool) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k][:2] == b[k][:2], k
        va, vb = np.frombuffer(a[k][2], np.float32), np.frombuffer(b[k][2], np.float32)
        if exact:
            assert a[k][2] == b[k][2], k
        else:  # qdrant-client's local mode re-normalises cosine vectors on each write (Qdrant does not)
            assert np.max(np.abs(va - vb)) <= 1e-6, k


def test_every_edit_is_recorded_and_undone_exactly(clf: Classifier) -> None:
    exact = clf.store.backend == "edge"
    start = _state(clf)
    clf.add([Example("new-1", "refund ticket new", "refund"), Example("card-1", "card text replaced", "card")], who="t")
    clf.relabel("pin-2", "card", who="t")
    clf.delete("transfer-3", who="t")
    clf.add([Example("pin-4", "pin ticket 4", "pin")], who="t")  # unchanged: nothing recorded
    sets = history.change_sets(clf.store, "tickets")
    assert [(cs.kind, cs.who, len(cs.changes)) for cs in sets] == [
        ("add", "t", 2),
        ("relabel", "t", 1),
        ("delete", "t", 1),
    ]
    h = history.example_history(clf.store, "tickets", "card-1")
    assert [(e["kind"], e["old"]["text"], e["new"]["text"]) for e in h] == [
        ("add", "card ticket 1", "card text replaced")
    ]
    assert history.example_history(clf.store, "tickets", "transfer-3")[0]["new"] is None
    with pytest.raises(ExampleNotFoundError):
        history.example_history(clf.store, "tickets", "never-there")
    for _ in range(3):  # newest first
        history.undo(clf.store, "tickets", who="t")
    _same_state(_state(clf), start, exact)
    with pytest.raises(ChangeNotFoundError, match="no recorded change left"):
        history.undo(clf.store, "tickets")
    # each undo is a change set of its own: undoing the newest one redoes the add
    sets = history.change_sets(clf.store, "tickets")
    assert [cs.kind for cs in sets[3:]] == ["undo"] * 3 and sets[3].undoes == sets[2].id
    history.undo(clf.store, "tickets", sets[-1].id)
    assert clf.get("card-1").text == "card text replaced" and clf.get("new-1").label == "refund"


def test_undo_refused_when_the_examples_changed_since(clf: Classifier) -> None:
    clf.relabel("pin-2", "card")
    first = history.change_sets(clf.store, "tickets")[-1]
    clf.relabel("pin-2", "refund")
    with pytest.raises(HistoryConflictError, match=r"changed since.*'pin-2' is now labelled 'refund'"):
        history.undo(clf.store, "tickets", first.id)
    assert clf.get("pin-2").label == "refund"
    history.undo(clf.store, "tickets", first.id, force=True)
    assert clf.get("pin-2").label == "pin"
    with pytest.raises(HistoryConflictError, match="already undone"):
        history.undo(clf.store, "tickets", first.id)
    with pytest.raises(ChangeNotFoundError):
        history.undo(clf.store, "tickets", "no-such-change")


def test_500_reviewed_relabels_are_one_change_set_and_undo_restores_them(tmp_path: Path, clf: Classifier) -> None:
    clf.add([Example(f"x-{i}", f"{TOPICS[i % 4]} extra {i}", TOPICS[i % 4]) for i in range(500)])
    before = {e.id: e.label for e in clf.iter_examples()}
    reviewed = tmp_path / "reviewed.csv"
    reviewed.write_text("id,label\n" + "".join(f"x-{i},{TOPICS[(i + 1) % 4]}\n" for i in range(500)))
    assert apply_relabels(clf, reviewed) == 500
    cs = history.change_sets(clf.store, "tickets")[-1]
    assert (cs.kind, cs.who, len(cs.changes)) == ("relabel", "cli", 500)
    assert sum(e.label != before[e.id] for e in clf.iter_examples()) == 500
    history.undo(clf.store, "tickets")
    assert {e.id: e.label for e in clf.iter_examples()} == before


def test_history_survives_promote(tmp_path: Path, clf: Classifier) -> None:
    from knnclass.jobs.reindex import promote

    clf.relabel("card-5", "pin")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"format": 1, "strategy": "full", "encoder": "x", "tasks": []}))
    assert promote(clf.store, "tickets", run, encoder=ENC)["to"] == "v2"
    assert [h["kind"] for h in history.example_history(clf.store, "tickets", "card-5")] == ["relabel"]
    history.undo(clf.store, "tickets")  # applies to the version now current
    assert clf.get("card-5").label == "card" and clf.ref().version == "v2"


def test_failed_write_is_recorded_as_aborted(clf: Classifier, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*a: object, **k: object) -> None:
        raise StoreError("disk trouble")

    monkeypatch.setattr(clf.store, "upsert", broken)
    with pytest.raises(StoreError):
        clf.relabel("pin-1", "card")
    monkeypatch.undo()
    assert history.change_sets(clf.store, "tickets") == []
    assert len(clf.store.read_history("tickets", "")) == 2  # the change set and its abort record
    assert clf.get("pin-1").label == "pin"


def test_torn_history_line_is_skipped(tmp_path: Path) -> None:
    st = EdgeStore(tmp_path / "s")
    st.append_history("tickets", "", [{"id": "a"}])
    with (tmp_path / "s" / "collections" / "tickets" / "history.jsonl").open("ab") as f:
        f.write(b'{"id": "torn", "chan')  # a crash mid-append
    st.append_history("tickets", "", [{"id": "b"}, {"id": "c"}])
    assert [r["id"] for r in st.read_history("tickets", "")] == ["a", "b", "c"]
    assert st.history_logs("tickets") == [""]
    st.close()


def test_server_history_splits_large_change_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    from qdrant_client import QdrantClient

    import knnclass.store.server as server

    monkeypatch.setattr(server, "_PART", 100)
    st = ServerStore(client=QdrantClient(location=":memory:"))
    big = {"id": "big", "changes": ["x" * 50] * 40}
    st.append_history("tickets", "", [{"id": "a"}, big])
    st.append_history("tickets", "abc", [{"id": "other log"}])
    st.append_history("other", "", [{"id": "other collection"}])
    assert st.read_history("tickets", "") == [{"id": "a"}, big]
    assert st.history_logs("tickets") == ["", "abc"]
    st.drop_history("tickets", "abc")
    assert st.history_logs("tickets") == [""] and st.read_history("other", "") == [{"id": "other collection"}]
    st.close()


def test_history_route_and_who(tmp_path: Path) -> None:
    for key, who in ((None, "api"), ("write-key", "api:write")):
        c = Classifier(EdgeStore(tmp_path / f"s-{who}"), "tickets", encoder=ENC)
        c.index([Example(f"{t}-{i}", f"{t} ticket {i}", t) for t in TOPICS for i in range(5)])
        c.tune()
        headers = {"X-API-Key": key} if key else {}
        with TestClient(create_app(c, ServiceSettings(api_key=key))) as client:
            assert client.patch("/v1/examples/crm/7", json={"label": "x"}, headers=headers).status_code == 404
            client.post(
                "/v1/examples", json={"examples": [{"id": "crm/7", "text": "pin", "label": "pin"}]}, headers=headers
            )
            assert client.patch("/v1/examples/crm/7", json={"label": "card"}, headers=headers).status_code == 200
            r = client.get("/v1/examples/crm/7/history", headers=headers)
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["id"] == "crm/7" and [(h["kind"], h["who"]) for h in got["history"]] == [
                ("add", who),
                ("relabel", who),
            ]
            assert got["history"][1]["old"] == {"label": "pin", "text": "pin"} and "old_vector" not in json.dumps(got)
            assert client.delete("/v1/examples/crm/7", headers=headers).status_code == 200
            assert client.get("/v1/examples/crm/7/history", headers=headers).json()["history"][-1]["new"] is None
            assert client.get("/v1/examples/nothing/history", headers=headers).status_code == 404
            assert client.get("/v1/examples/crm/7", headers=headers).status_code == 404


def test_cli_history_and_undo(tmp_path: Path) -> None:
    path = tmp_path / "store"
    st = EdgeStore(path)
    Classifier(st, "tickets", encoder=ENC).index(
        [Example(f"{t}-{i}", f"{t} ticket {i}", t) for t in TOPICS for i in range(5)]
    )
    st.close()
    reviewed = tmp_path / "r.csv"
    reviewed.write_text("id,label\ncard-1,pin\ncard-2,pin\n")
    run = CliRunner()
    assert run.invoke(cli, ["suspects", "--apply", str(reviewed), "--store", str(path)]).exit_code == 0
    r = run.invoke(cli, ["history", "card-1", "--store", str(path)])
    assert r.exit_code == 0 and "cli" in r.stdout and "'card' -> 'pin'" in r.stdout
    r = run.invoke(cli, ["history", "--store", str(path), "--json"])
    listed = json.loads(r.stdout)
    assert [(d["kind"], d["examples"]) for d in listed] == [("relabel", 2)]
    r = run.invoke(cli, ["undo", "--store", str(path)])
    assert r.exit_code == 0 and f"undid {listed[0]['id']}: 2 examples" in r.stdout
    r = run.invoke(cli, ["undo", listed[0]["id"], "--store", str(path)])
    assert r.exit_code == 8 and r.stderr.startswith("error:") and "already undone" in r.stderr
    r = run.invoke(cli, ["undo", "nope", "--store", str(path)])
    assert r.exit_code == 6 and len(r.stderr.strip().splitlines()) == 1
    st = EdgeStore(path)
    assert Classifier(st, "tickets", encoder=ENC).get("card-2").label == "card"
    st.close()
