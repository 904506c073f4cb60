"""One suite, both backends: embedded Qdrant Edge and the server backend.

The server backend runs against qdrant-client's in-process mode as a stand-in for a
Qdrant server (none can be installed here); the backend code does not special-case it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from knnclass.classifier import Classifier
from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.errors import CollectionNotFoundError, InputError
from knnclass.store import CollectionMeta, Store

from ._stores import BACKENDS, make_store

TOPICS = ["card", "transfer", "pin", "refund"]
ENC = FakeEncoder(topics=TOPICS)


def _examples() -> list[Example]:
    return [Example(f"{t}-{i}", f"{t} ticket {i} {i * 3 % 7}", t) for t in TOPICS for i in range(15)]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    st = make_store(request.param, tmp_path)
    yield st
    st.close()


def _meta() -> CollectionMeta:
    return CollectionMeta(ENC.identity, "fake", ENC.dim)


def test_create_upsert_count_retrieve_delete(store: Store) -> None:
    ref = store.create("tickets", _meta())
    ex = _examples()
    store.upsert(ref, ex, ENC.embed([e.text for e in ex]))
    assert store.count(ref) == 60
    store.upsert(ref, ex[:5], ENC.embed([e.text for e in ex[:5]]))  # idempotent
    assert store.count(ref) == 60
    got = store.retrieve(ref, ["pin-3", "nope", "card-0"], with_vectors=True)
    assert [e.id for e, _ in got] == ["pin-3", "card-0"]
    assert got[0][0] == ex[2 * 15 + 3]
    assert got[0][1] is not None and np.allclose(got[0][1], ENC.embed([ex[33].text])[0], atol=1e-6)
    store.delete(ref, ["pin-3"])
    assert store.count(ref) == 59 and store.retrieve(ref, ["pin-3"]) == []
    assert store.label_counts(ref) == {"card": 15, "pin": 14, "refund": 15, "transfer": 15}
    seen = [e.id for batch, _ in store.scroll(ref, 7) for e in batch]
    assert len(seen) == 59 and len(set(seen)) == 59


def test_search_and_meta(store: Store) -> None:
    ref = store.create("tickets", _meta())
    ex = _examples()
    store.upsert(ref, ex, ENC.embed([e.text for e in ex]))
    hits = store.search(ref, ENC.embed(["refund please", "my pin"]), 5)
    assert [h.label for h in hits[0]] == ["refund"] * 5 and [h.label for h in hits[1]] == ["pin"] * 5
    assert all(a.score >= b.score for a, b in zip(hits[0], hits[0][1:], strict=False))
    assert hits[0][0].text is None and store.search(ref, ENC.embed(["x"]), 1, with_text=True)[0][0].text
    meta = store.get_meta(ref)
    assert meta == _meta()
    store.set_meta(ref, meta.with_(rule={"vote": "majority", "size": "k", "value": 3, "threshold": 0.0}))
    assert store.get_meta(ref).rule == {"vote": "majority", "size": "k", "value": 3, "threshold": 0.0}


def test_versions_and_atomic_switch(store: Store) -> None:
    assert store.list_collections() == [] and store.current_version("tickets") is None
    v1 = store.create("tickets", _meta())
    v2 = store.create_version("tickets", _meta())
    assert (v1.version, v2.version) == ("v1", "v2")
    assert store.versions("tickets") == ["v1", "v2"] and store.current_version("tickets") == "v1"
    store.switch("tickets", "v2")
    assert store.ref("tickets") == v2 and store.list_collections() == ["tickets"]
    with pytest.raises(InputError):
        store.drop_version(v2)
    store.drop_version(v1)
    assert store.versions("tickets") == ["v2"]
    with pytest.raises(CollectionNotFoundError):
        store.switch("tickets", "v1")
    with pytest.raises(CollectionNotFoundError):
        store.ref("other")


def _run_classifier(kind: str, tmp: Path) -> tuple[list[tuple[str | None, list[str]]], dict, int]:
    st = make_store(kind, tmp)
    clf = Classifier(st, "tickets", encoder=ENC)
    clf.index(_examples())
    tuned = clf.tune()
    queries = [f"{t} question {i}" for t in TOPICS for i in range(5)] + ["something else entirely"]
    preds, _, _ = clf.classify(queries)
    out = [(p.label, [n.id for n in p.neighbours]) for p in preds]
    count = st.count(clf.ref())
    st.close()
    return out, tuned.best.to_dict(), count


def test_backends_give_identical_results(tmp_path: Path) -> None:
    edge = _run_classifier("edge", tmp_path)
    server = _run_classifier("server", tmp_path)
    remote = _run_classifier("remote", tmp_path)
    assert remote == edge  # the same store through a service: exactly the same
    assert edge[2] == server[2] == 60
    # same tuned rule and scores (the backends' similarities agree to float32 rounding)
    assert edge[1].keys() == server[1].keys()
    for key, value in edge[1].items():
        if isinstance(value, float):
            assert value == pytest.approx(server[1][key], rel=1e-5, abs=1e-6), key
        else:
            assert value == server[1][key], key
    assert edge[0] == server[0]  # same labels and the same neighbour ids in the same order


def test_hnsw_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from knnclass.store import HnswSettings

    assert HnswSettings.from_env() == HnswSettings()
    monkeypatch.setenv("KNNCLASS_HNSW_M", "48")
    monkeypatch.setenv("KNNCLASS_HNSW_EF", "64")
    assert HnswSettings.from_env() == HnswSettings(m=48, ef=64)
    monkeypatch.setenv("KNNCLASS_HNSW_EF", "lots")
    with pytest.raises(InputError, match="KNNCLASS_HNSW"):
        HnswSettings.from_env()
    with pytest.raises(InputError, match="out of range"):
        HnswSettings(m=1)
