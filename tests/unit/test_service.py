"""HTTP API through the ASGI app: results, live edits, health, limits, auth."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from knnclass.classifier import Classifier
from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.service import ServiceSettings, create_app
from knnclass.store.edge import EdgeStore

TOPICS = ["card", "transfer", "pin"]


def _clf(path: Path, tuned: bool = True, n: int = 8) -> Classifier:
    st = EdgeStore(path)
    c = Classifier(st, "tickets", encoder=FakeEncoder(topics=TOPICS))
    if n:
        c.index([Example(f"{t}-{i}", f"{t} question {i}", t) for t in TOPICS for i in range(n)])
        if tuned:
            c.tune()
    return c


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_clf(tmp_path / "s"))) as c:
        yield c


def _err(r, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) >= {"type", "message"}
    return body["error"]


def test_classify_single_and_batch(client: TestClient) -> None:
    r = client.post("/v1/classify", json={"text": "my card is broken"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["collection"] == "tickets" and d["version"] == "v1" and d["encoder"].startswith("fake-")
    p = d["predictions"][0]
    assert p["label"] == "card" and not p["abstained"] and 0 < p["confidence"] <= 1
    assert p["neighbours"][0]["label"] == "card" and {"id", "label", "score"} == set(p["neighbours"][0])
    app_ms = float(r.headers["server-timing"].removeprefix("app;dur="))  # the service's own handling time
    assert 0 < app_ms < 60_000
    r = client.post("/v1/classify", json={"texts": ["pin reset", "transfer late"], "include_neighbours": False})
    preds = r.json()["predictions"]
    assert [p["label"] for p in preds] == ["pin", "transfer"] and "neighbours" not in preds[0]


def test_answers_carry_probability_suggestion_and_alternatives(client: TestClient) -> None:
    p = client.post("/v1/classify", json={"text": "pin reset", "k": 7}).json()["predictions"][0]
    assert p["suggestion"] == p["label"] == "pin" and p["source"] == "knn" and 0 < p["confidence"] <= 1
    assert isinstance(p["familiarity"], float)
    assert all(a["label"] != "pin" and 0 <= a["confidence"] <= 1 - p["confidence"] + 1e-6 for a in p["alternatives"])
    # a novelty floor above everything: abstained as unknown, the best guess kept
    rule = {"vote": "majority", "size": "k", "value": 3, "novelty": 1e5}
    p = client.post("/v1/classify", json={"text": "pin reset", "rule": rule}).json()["predictions"][0]
    assert p["abstained"] and p["reason"] == "unknown" and p["label"] is None and p["suggestion"] == "pin"


def test_rule_and_k_override(client: TestClient) -> None:
    d = client.post("/v1/classify", json={"text": "card", "k": 7}).json()
    assert len(d["predictions"][0]["neighbours"]) == 7 and d["rule"]["value"] == 7
    d = client.post(
        "/v1/classify", json={"text": "card", "rule": {"vote": "weighted", "size": "pct", "value": 50}}
    ).json()
    assert d["rule"]["vote"] == "weighted" and len(d["predictions"][0]["neighbours"]) == 12


def test_live_examples_visible_on_next_call(client: TestClient) -> None:
    r = client.post("/v1/examples", json={"examples": [{"id": "x1", "text": "refund please now", "label": "refund"}]})
    assert r.status_code == 200 and r.json()["ids"] == ["x1"]
    top = client.post("/v1/classify", json={"text": "refund please now", "k": 1}).json()["predictions"][0]
    assert top["label"] == "refund" and top["neighbours"][0]["id"] == "x1"
    assert client.get("/v1/examples/x1").json() == {"id": "x1", "text": "refund please now", "label": "refund"}
    assert client.patch("/v1/examples/x1", json={"label": "money_back"}).json()["label"] == "money_back"
    top = client.post("/v1/classify", json={"text": "refund please now", "k": 1}).json()["predictions"][0]
    assert top["label"] == "money_back"
    assert client.delete("/v1/examples/x1").status_code == 200
    top = client.post("/v1/classify", json={"text": "refund please now", "k": 1}).json()["predictions"][0]
    assert top["neighbours"][0]["id"] != "x1"
    _err(client.get("/v1/examples/x1"), 404)
    _err(client.delete("/v1/examples/x1"), 404)
    _err(client.patch("/v1/examples/x1", json={"label": "a"}), 404)
    # content-hash ids when none is given
    ids = client.post("/v1/examples", json={"examples": [{"text": "hello there", "label": "greet"}]}).json()["ids"]
    assert ids[0].startswith("sha256:")


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] and r.json()["count"] == 24
    client.post("/v1/classify", json={"text": "card"})
    m = client.get("/metrics").text
    assert 'knnclass_requests_total{method="POST",route="/v1/classify",status="200"}' in m
    assert "knnclass_request_seconds_bucket" in m and "knnclass_encode_seconds_count" in m
    assert "knnclass_search_seconds_count" in m and "knnclass_index_size 24.0" in m
    assert client.get("/docs").status_code == 200
    assert "/v1/classify" in client.get("/openapi.json").json()["paths"]


def test_not_ready_when_empty_or_wrong_encoder(tmp_path: Path) -> None:
    c = _clf(tmp_path / "a", n=0)
    with TestClient(create_app(c)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and not r.json()["ready"]
        _err(client.post("/v1/classify", json={"text": "x"}), 404)  # no collection yet
    c = _clf(tmp_path / "b")
    wrong = Classifier(c.store, "tickets", encoder=FakeEncoder(dim=8))
    with TestClient(create_app(wrong)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "indexed with encoder" in r.json()["reason"]
        _err(client.post("/v1/classify", json={"text": "x"}), 409)


def test_not_tuned_is_409(tmp_path: Path) -> None:
    with TestClient(create_app(_clf(tmp_path / "s", tuned=False))) as client:
        assert "knnclass tune" in _err(client.post("/v1/classify", json={"text": "card"}), 409)["message"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": ""},
        {"text": "   "},
        {"text": "\u200b\u200b"},
        {"text": "\u0000"},
        {"text": 5},
        {"text": None, "texts": None},
        {"text": "a", "texts": ["b"]},
        {"texts": []},
        {"texts": ["ok", ""]},
        {"texts": ["ok", 3]},
        {"texts": ["x"] * 257},
        {"texts": "not a list"},
        {"text": "a", "k": 0},
        {"text": "a", "k": 10**12},
        {"text": "a", "k": "3"},
        {"text": "a", "rule": {"vote": "plurality"}},
        {"text": "a", "rule": {"value": -1}},
        {"text": "a", "rule": {"threshold": 2}},
        {"text": "a", "unknown_field": 1},
        {"text": "a", "include_neighbours": "no"},
        [1, 2, 3],
        "just a string",
    ],
)
def test_bad_classify_bodies_are_422(client: TestClient, body: object) -> None:
    e = _err(client.post("/v1/classify", json=body), 422)
    assert e["type"] == "validation_error"


def test_malformed_json_and_bad_utf8_are_422(client: TestClient) -> None:
    for raw in (b"{not json", b'{"text": "\xff\xfe"}', b"", b'{"text": "a"' + b"]" * 10):
        r = client.post("/v1/classify", content=raw, headers={"content-type": "application/json"})
        _err(r, 422)
    r = client.post("/v1/classify", content=b'{"text": ', headers={"content-type": "application/json"})
    assert _err(r, 422)["message"] == "body: invalid JSON at character 9"


def test_long_texts_are_shortened_or_refused_with_truncate_false(client: TestClient) -> None:
    long = " ".join(["card"] * 100)  # fake encoder: max_tokens 64
    assert "tokens" in _err(client.post("/v1/classify", json={"text": long, "truncate": False}), 422)["message"]
    r = client.post("/v1/classify", json={"text": long})  # by default as the CLI does: the long-text strategy
    assert r.status_code == 200 and r.json()["predictions"][0]["shortened"] is True
    assert client.post("/v1/classify", json={"text": "card"}).json()["predictions"][0]["shortened"] is False
    _err(client.post("/v1/examples", json={"examples": [{"text": long, "label": "a"}], "truncate": False}), 422)
    assert client.post("/v1/examples", json={"examples": [{"text": long, "label": "card"}]}).status_code == 200


def test_body_over_one_mib_is_413(client: TestClient) -> None:
    big = json.dumps({"text": "x" * (1 << 20)})
    assert _err(client.post("/v1/classify", content=big, headers={"content-type": "application/json"}), 413)

    # without a content-length header (chunked), the stream is counted
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 65536

    _err(client.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_oversized_chunked_write_changes_nothing(client: TestClient) -> None:
    """A chunked body cut off at the limit must not reach the route as a shorter, valid one."""

    def padded(doc: dict) -> Iterator[bytes]:  # type: ignore[type-arg]
        yield json.dumps(doc).encode()
        for _ in range(20):
            yield b" " * 65536

    add = {"examples": [{"id": "big-1", "text": "card lost", "label": "via_413"}]}
    _err(client.post("/v1/examples", content=padded(add), headers={"content-type": "application/json"}), 413)
    _err(client.get("/v1/examples/big-1"), 404)
    r = client.patch(
        "/v1/examples/card-1", content=padded({"label": "x"}), headers={"content-type": "application/json"}
    )
    _err(r, 413)
    assert client.get("/v1/examples/card-1").json()["label"] == "card"
    assert client.get("/readyz").json()["count"] == 24
    assert 'route="oversize",status="413"' not in client.get("/metrics").text
    big = json.dumps({"text": "x" * (1 << 20)})
    _err(client.post("/v1/classify", content=big, headers={"content-type": "application/json"}), 413)
    assert 'route="oversize",status="413"' in client.get("/metrics").text


def test_stalled_upload_holds_no_slot_and_times_out(tmp_path: Path) -> None:
    """Requests count against --max-in-flight only once their body is in; a stalled one gets 408."""
    app = create_app(_clf(tmp_path / "s"), ServiceSettings(max_in_flight=1, body_timeout_s=0.5))
    import httpx

    async def stalled_body() -> AsyncIterator[bytes]:
        yield b'{"text": '
        await asyncio.sleep(30)

    async def scenario() -> tuple[httpx.Response, list[httpx.Response]]:
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            hdrs = {"content-type": "application/json"}
            stalled = [
                asyncio.create_task(c.post("/v1/classify", content=stalled_body(), headers=hdrs)) for _ in range(3)
            ]
            await asyncio.sleep(0.1)
            ok = [await c.post("/v1/classify", json={"text": "card"}) for _ in range(2)]
            return (await stalled[0]), ok

    slow, ok = asyncio.run(scenario())
    assert [r.status_code for r in ok] == [200, 200]
    assert slow.status_code == 408 and slow.json()["error"]["type"] == "request_timeout"


def test_unknown_route_and_method(client: TestClient) -> None:
    assert _err(client.get("/nope"), 404)["type"] == "not_found"
    assert _err(client.put("/v1/classify", json={}), 405)["type"] == "method_not_allowed"
    # a trailing slash is a JSON 404, not a redirect without a body
    assert _err(client.post("/v1/classify/", json={"text": "card"}, follow_redirects=False), 404)
    _err(client.get("/livez/", follow_redirects=False), 404)
    for path in ("/livez", "/readyz", "/metrics"):  # probes that use HEAD
        assert client.head(path).status_code == 200


def test_ids_with_slashes_and_repeated_ids(client: TestClient) -> None:
    r = client.post("/v1/examples", json={"examples": [{"id": "crm/42", "text": "card blocked", "label": "card"}]})
    assert r.status_code == 200
    assert client.get("/v1/examples/crm/42").json()["id"] == "crm/42"
    assert client.patch("/v1/examples/crm%2F42", json={"label": "pin"}).json()["label"] == "pin"
    assert client.delete("/v1/examples/crm/42").status_code == 200
    _err(client.get("/v1/examples/crm/42"), 404)
    two = [{"id": "d", "text": "pin one", "label": "pin"}, {"id": "d", "text": "pin two", "label": "card"}]
    r = client.post("/v1/examples", json={"examples": two}).json()
    assert r == {"upserted": 1, "ids": ["d", "d"]}  # ids line up with the items; the last one wins
    assert client.get("/v1/examples/d").json()["text"] == "pin two"
    assert client.get("/readyz").json()["count"] == 25


def test_bad_example_bodies(client: TestClient) -> None:
    for body in (
        {"examples": []},
        {"examples": [{"text": "a"}]},
        {"examples": [{"text": "a", "label": ""}]},
        {"examples": [{"text": " ", "label": "x"}]},
        {"examples": [{"text": "a", "label": 1}]},
        {"examples": [{"text": "a", "label": "b"}] * 257},
    ):
        _err(client.post("/v1/examples", json=body), 422)
    _err(client.patch("/v1/examples/card-1", json={"label": ""}), 422)


def test_overload_gives_429_with_retry_after(tmp_path: Path) -> None:
    app = create_app(_clf(tmp_path / "s"), ServiceSettings(max_in_flight=2))
    import httpx

    async def flood() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await asyncio.gather(*(c.post("/v1/classify", json={"texts": ["card"] * 200}) for _ in range(12)))

    rs = asyncio.run(flood())
    codes = sorted(r.status_code for r in rs)
    assert codes.count(200) >= 2 and 429 in codes and set(codes) <= {200, 429}
    r429 = next(r for r in rs if r.status_code == 429)
    assert r429.headers["retry-after"] == "1" and r429.json()["error"]["type"] == "overloaded"


@pytest.fixture()
def secured(tmp_path: Path) -> Iterator[TestClient]:
    s = ServiceSettings(api_key="write-secret-123", read_key="read-secret-456")
    with TestClient(create_app(_clf(tmp_path / "s"), s)) as c:
        yield c


def test_auth(secured: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    add = {"examples": [{"id": "z", "text": "card z", "label": "card"}]}
    assert _err(secured.post("/v1/classify", json={"text": "card"}), 401)["type"] == "unauthorized"
    _err(secured.post("/v1/classify", json={"text": "card"}, headers={"X-API-Key": "nope"}), 403)
    for key in ("read-secret-456", "write-secret-123"):
        r = secured.post("/v1/classify", json={"text": "card"}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    _err(secured.post("/v1/examples", json=add), 401)
    e = _err(secured.post("/v1/examples", json=add, headers={"X-API-Key": "read-secret-456"}), 403)
    _err(secured.post("/v1/examples", json=add, headers={"X-API-Key": "write-secret-12"}), 403)
    _err(secured.delete("/v1/examples/card-1", headers={"X-API-Key": "read-secret-456"}), 403)
    _err(secured.patch("/v1/examples/card-1", json={"label": "x"}), 401)
    for empty in ({"Authorization": "Bearer "}, {"X-API-Key": ""}):  # an empty key is a missing one
        _err(secured.post("/v1/classify", json={"text": "card"}, headers=empty), 401)
    assert secured.post("/v1/examples", json=add, headers={"X-API-Key": "write-secret-123"}).status_code == 200
    assert secured.get("/livez").status_code == 200 and secured.get("/readyz").status_code == 200
    assert "secret" not in json.dumps(e)
    assert "secret" not in caplog.text


def test_read_key_without_write_key_is_refused() -> None:
    from knnclass.errors import InputError

    with pytest.raises(InputError, match="KNNCLASS_API_KEY"):
        ServiceSettings(read_key="reader")


def test_store_closed_on_shutdown(tmp_path: Path) -> None:
    c = _clf(tmp_path / "s")
    with TestClient(create_app(c)) as client:
        assert client.get("/livez").status_code == 200
    EdgeStore(tmp_path / "s").close()  # lock released: a new process could open it


def test_fuzzed_requests_never_5xx(tmp_path: Path) -> None:
    from tests.fuzz_http import run_fuzz

    app = create_app(_clf(tmp_path / "s"), ServiceSettings(api_key=None))
    with TestClient(app, raise_server_exceptions=False) as client:
        codes = run_fuzz(client, 1500, seed=1)
        assert client.get("/livez").status_code == 200
    assert sum(codes.values()) == 1500
    assert codes[200] > 0 and codes[422] > 0 and codes[404] > 0 and codes[413] > 0


def test_fields_are_composed_as_the_collection_was_indexed(client: TestClient) -> None:
    d = client.post("/v1/classify", json={"fields": {"text": "pin reset please"}}).json()
    assert d["predictions"][0]["suggestion"] == "pin"  # this collection was indexed from the "text" column
    err = _err(client.post("/v1/classify", json={"fields": {"subject": "pin", "body": "reset"}}), 422)
    assert "unknown field 'body'" in err["message"] and "comes from text" in err["message"]
    _err(client.post("/v1/classify", json={"text": "pin", "fields": {"text": "pin"}}), 422)


def test_snapshot_while_serving_under_classify_load_then_restore_loses_nothing(tmp_path: Path) -> None:
    import threading

    from knnclass.jobs.backup import restore
    from knnclass.service import ServiceSettings

    snaps = tmp_path / "snaps"
    snaps.mkdir()
    clf = _clf(tmp_path / "s", n=40)
    settings = ServiceSettings(api_key="w", snapshot_dir=str(snaps))
    auth = {"Authorization": "Bearer w"}
    failures: list[int] = []
    stop = threading.Event()
    with TestClient(create_app(clf, settings)) as c:
        assert (
            c.post(
                "/v1/examples", json={"examples": [{"id": "live-1", "text": "pin live", "label": "pin"}]}, headers=auth
            ).status_code
            == 200
        )

        def load() -> None:
            while not stop.is_set():
                r = c.post("/v1/classify", json={"text": "card question 3"}, headers=auth)
                if r.status_code != 200:
                    failures.append(r.status_code)

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        r = c.post("/v1/admin/snapshot", json={"name": "live.zip"}, headers=auth)
        stop.set()
        for t in threads:
            t.join()
        assert r.status_code == 200, r.text
        assert _err(c.post("/v1/admin/snapshot", json={"name": "../x.zip"}, headers=auth), 422)
        assert _err(c.post("/v1/admin/snapshot", json={"name": "x.zip"}), 401)
    assert failures == []
    target = EdgeStore(tmp_path / "restored")
    restore(target, snaps / "live.zip")
    back = Classifier(target, "tickets", encoder=FakeEncoder(topics=TOPICS))
    assert back.get("live-1").label == "pin" and target.count(back.ref()) == 3 * 40 + 1
    assert back.meta().rule is not None and back.meta().policy is not None  # rule and calibration restored


def test_snapshot_route_is_off_without_a_dir(client: TestClient) -> None:
    assert "--snapshot-dir" in _err(client.post("/v1/admin/snapshot", json={"name": "x.zip"}), 403)["message"]


def test_a_v1_request_in_progress_holds_background_store_work_but_admin_calls_do_not() -> None:
    from knnclass.service.app import _Guard, _Metrics
    from knnclass.service.foreground import Foreground
    from knnclass.store.remote import STORE_ROUTE

    fg = Foreground()
    seen: list[bool] = []

    async def inner(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        seen.append(fg._quiet.is_set())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = _Guard(inner, settings=ServiceSettings(), metrics=_Metrics(), foreground=fg)

    async def call(path: str) -> None:
        async def receive() -> dict:  # type: ignore[type-arg]
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(msg: dict) -> None:  # type: ignore[type-arg]
            pass

        await guard({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)

    asyncio.run(call("/v1/classify"))
    asyncio.run(call(STORE_ROUTE))  # another process's store call is the background work itself
    assert seen == [False, True]
    assert fg._quiet.is_set()  # left when the request ended


def test_the_service_shortens_the_gil_switch_interval_while_it_runs(tmp_path: Path) -> None:
    import sys

    from knnclass.errors import InputError

    before = sys.getswitchinterval()
    with TestClient(create_app(_clf(tmp_path / "s"), ServiceSettings(gil_switch_ms=0.25))):
        assert sys.getswitchinterval() == pytest.approx(0.00025)
    assert sys.getswitchinterval() == before
    with pytest.raises(InputError, match="GIL_SWITCH_MS"):
        ServiceSettings(gil_switch_ms=0)


def test_the_gil_switch_interval_is_restored_when_startup_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from knnclass.service.jobs import JobRunner

    async def broken(self: JobRunner) -> None:
        raise RuntimeError("job runner failed to start")

    monkeypatch.setattr(JobRunner, "start", broken)
    before = sys.getswitchinterval()
    app = create_app(_clf(tmp_path / "s"), ServiceSettings(gil_switch_ms=0.25, jobs_dir=str(tmp_path / "jobs")))
    with pytest.raises(RuntimeError, match="failed to start"), TestClient(app):
        pass
    assert sys.getswitchinterval() == before


def test_foreground_refuses_a_leave_without_an_enter() -> None:
    from knnclass.service.foreground import Foreground

    fg = Foreground()
    fg.enter()
    fg.enter()
    fg.leave()
    assert not fg._quiet.is_set()  # one request still in progress
    fg.leave()
    assert fg._quiet.is_set()
    with pytest.raises(RuntimeError, match="without a matching enter"):
        fg.leave()
    fg.enter()
    assert not fg._quiet.is_set()  # the refused leave did not push the count below zero
