"""HTTP: "filter" on classify, every label set answered, PATCH per label set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from knnclass.classifier import Classifier
from knnclass.service import create_app
from knnclass.store.edge import EdgeStore

from .test_label_sets import ENC, _examples


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    clf = Classifier(EdgeStore(tmp_path / "s"), "tickets", encoder=ENC)
    clf.index(_examples(), label_sets=["queue", "priority"])
    clf.tune_all()
    with TestClient(create_app(clf)) as c:
        yield c
    clf.store.close()


def test_classify_answers_every_set_and_filters(client: TestClient) -> None:
    r = client.post("/v1/classify", json={"text": "card question", "k": 9})
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert set(p["labels"]) == {"queue", "priority"} and p["labels"]["priority"]["suggestion"] == "urgent"
    assert any(n["label"] == "general" for n in p["neighbours"])
    body = {"text": "card question", "k": 9, "filter": {"created_at": {"gte": "2026-03-01"}, "product": "cards"}}
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["suggestion"] == "card" and all(n["label"] != "general" for n in p["neighbours"])
    bad = client.post("/v1/classify", json={"text": "card", "filter": {"tier": "gold"}})
    assert bad.status_code in (400, 422) and "unknown metadata column 'tier'" in bad.text
    bad = client.post("/v1/classify", json={"text": "card", "filter": {"created_at": {"gte": "soon"}}})
    assert bad.status_code in (400, 422) and "'created_at' holds dates" in bad.text
    bad = client.post("/v1/classify", json={"text": "card", "filter": {"created_at": {"between": 1}}})
    assert bad.status_code == 422


def test_relabel_per_set(client: TestClient) -> None:
    r = client.patch("/v1/examples/pin-2", json={"labels": {"priority": "normal"}})
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "pin" and r.json()["labels"] == {"priority": "normal"}
    assert client.get("/v1/examples/pin-2").json()["meta"]["product"] == "loans"
    r = client.patch("/v1/examples/pin-2", json={"label": "refund"})
    assert r.status_code == 200 and r.json()["label"] == "refund" and r.json()["labels"] == {"priority": "normal"}
    assert client.patch("/v1/examples/pin-2", json={"labels": {"tier": "x"}}).status_code in (400, 422)
    assert client.patch("/v1/examples/pin-2", json={"label": "a", "labels": {"priority": "b"}}).status_code == 422


@pytest.mark.parametrize("include_neighbours", [True, False])
def test_classify_answers_are_what_the_documented_model_says(client: TestClient, include_neighbours: bool) -> None:
    """The route encodes the library's dicts without re-validating them: they must be ClassifyResponse."""
    from knnclass.service.schemas import ClassifyResponse

    r = client.post("/v1/classify", json={"texts": ["card", "asdfgh qwerty"], "include_neighbours": include_neighbours})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert ClassifyResponse.model_validate(body).model_dump(exclude_unset=True) == body
    assert ("neighbours" in body["predictions"][0]) is include_neighbours
    assert set(body["predictions"][0]["labels"]) == {"queue", "priority"}
