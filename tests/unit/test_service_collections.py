"""One service, every collection of the store: /v1/collections/{name}/... beside /v1/... (the default)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from knnclass.classifier import Classifier
from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.service import create_app
from knnclass.store.edge import EdgeStore

ENC = FakeEncoder(topics=["card", "pin", "refund", "queue_a", "queue_b"])


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    st = EdgeStore(tmp_path / "s")
    tickets = Classifier(st, "tickets", encoder=ENC)
    tickets.index([Example(f"t-{t}-{i}", f"{t} question {i}", t) for t in ("card", "pin", "refund") for i in range(6)])
    tickets.tune()
    routing = tickets.sibling("routing")
    routing.index([Example(f"r-{t}-{i}", f"{t} question {i}", t) for t in ("queue_a", "queue_b") for i in range(6)])
    routing.tune()
    with TestClient(create_app(tickets)) as c:
        yield c


def test_each_collection_answers_from_its_own_examples(client: TestClient) -> None:
    r = client.post("/v1/classify", json={"text": "card question"})
    assert r.status_code == 200 and r.json()["collection"] == "tickets"
    assert r.json()["predictions"][0]["label"] == "card"
    r = client.post("/v1/collections/routing/classify", json={"text": "queue_b question", "k": 3})
    assert r.status_code == 200, r.text
    assert r.json()["collection"] == "routing" and r.json()["predictions"][0]["label"] == "queue_b"
    assert {n["id"][:2] for n in r.json()["predictions"][0]["neighbours"]} == {"r-"}
    assert client.post("/v1/collections/tickets/classify", json={"text": "pin question"}).json()["collection"] == (
        "tickets"
    )


def test_examples_and_info_per_collection(client: TestClient) -> None:
    r = client.post(
        "/v1/collections/routing/examples", json={"examples": [{"id": "new", "text": "x", "label": "queue_a"}]}
    )
    assert r.status_code == 200, r.text
    assert client.get("/v1/collections/routing/examples/new").json()["label"] == "queue_a"
    assert client.get("/v1/examples/new").status_code == 404  # not in the default collection
    assert client.get("/v1/collections/routing/info").json()["count"] == 13
    assert client.get("/v1/info").json()["count"] == 18
    listed = client.get("/v1/collections").json()
    assert listed["default"] == "tickets"
    assert {c["name"]: c["count"] for c in listed["collections"]} == {"routing": 13, "tickets": 18}


def test_unknown_or_invalid_collection_is_a_json_error(client: TestClient) -> None:
    r = client.post("/v1/collections/nope/classify", json={"text": "card"})
    assert r.status_code == 404 and "routing, tickets" in r.json()["error"]["message"]
    r = client.post("/v1/collections/bad%20name/classify", json={"text": "card"})
    assert r.status_code == 422 and r.json()["error"]["type"] == "InputError"
    m = client.get("/metrics").text
    assert 'route="/v1/collections/{name}/classify"' in m


def test_docs_work_offline(client: TestClient) -> None:
    """/docs and /redoc load their scripts from the service itself, never from a CDN."""
    import re

    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
        assert assets and not [a for a in assets if a.startswith("http")], (page, assets)
        for a in assets:
            r = client.get(a)
            assert r.status_code == 200 and len(r.content) > 10_000, a
    assert client.get("/openapi.json").json()["paths"]["/v1/collections/{name}/classify"]
