"""Several label sets in one collection, and metadata filters, through the Classifier (fake encoder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from knnclass import history
from knnclass.classifier import Classifier
from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.errors import InputError, NotTunedError
from knnclass.store.base import Where

from ._stores import BACKENDS, make_store

TOPICS = ["card", "transfer", "pin", "refund"]
ENC = FakeEncoder(topics=TOPICS)
URGENT = {"card", "pin"}


def _examples() -> list[Example]:
    out = []
    for t in TOPICS:
        for i in range(16):
            labels = {} if i == 5 else {"priority": "urgent" if t in URGENT else "normal"}
            # the queues were reorganised in March: before, every ticket went to "general"
            march = i % 2 == 0
            meta = {"product": ["cards", "loans"][i % 4 // 2], "created_at": f"2026-0{3 if march else 2}-1{i % 10}"}
            out.append(Example(f"{t}-{i}", f"{t} ticket {i} {i * 3 % 7}", t if march else "general", labels, meta))
    return out


QUERIES = [f"{t} question {i}" for t in TOPICS for i in range(4)]


def _classifier(kind: str, tmp: Path) -> Classifier:
    clf = Classifier(make_store(kind, tmp), "tickets", encoder=ENC)
    clf.index(_examples(), label_sets=["queue", "priority"])
    return clf


@pytest.mark.parametrize("kind", BACKENDS)
def test_every_set_answered_from_one_search(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clf = _classifier(kind, tmp_path)
    meta = clf.meta()
    assert meta.label_sets == ["queue", "priority"]
    assert meta.payload_schema == {"product": "keyword", "created_at": "datetime"}
    with pytest.raises(NotTunedError):
        clf.classify(QUERIES)
    results = clf.tune_all()
    assert list(results) == ["queue", "priority"] and clf.meta().sets and "priority" in clf.meta().sets
    calls = []
    search = clf.store.search
    monkeypatch.setattr(clf.store, "search", lambda *a, **kw: calls.append(1) or search(*a, **kw))
    preds, _, _ = clf.classify(QUERIES)
    assert len(calls) == 1  # one search serves both sets
    for q, p in zip(QUERIES, preds, strict=True):
        assert set(p.sets) == {"queue", "priority"} and p.sets["queue"].label == p.label
        assert p.sets["priority"].suggestion == ("urgent" if q.split()[0] in URGENT else "normal")
        assert all(not n.id.endswith("-5") for n in p.sets["priority"].neighbours)  # lacks a priority
        assert {n.label for n in p.sets["priority"].neighbours} <= {"urgent", "normal"}
    d = preds[0].to_dict()
    assert set(d["labels"]) == {"queue", "priority"} and d["label"] == d["labels"]["queue"]["label"]
    clf.store.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_only_matching_neighbours_vote(kind: str, tmp_path: Path) -> None:
    clf = _classifier(kind, tmp_path)
    clf.tune_all()
    unfiltered, _, _ = clf.classify(QUERIES, k=9)
    assert any(n.label == "general" for p in unfiltered for n in p.neighbours)
    after_march = Where.parse(["created_at>=2026-03-01"])
    preds, _, _ = clf.classify(QUERIES, k=9, where=after_march)
    assert all(n.label != "general" for p in preds for n in p.neighbours)
    assert [p.suggestion for p in preds] == [q.split()[0] for q in QUERIES]
    cards, _, _ = clf.classify(QUERIES, where=Where.parse(["product=cards", "created_at>=2026-03-01"]))
    stored = {e.id: e for e in clf.iter_examples()}
    assert all(stored[n.id].meta["product"] == "cards" for p in cards for n in p.neighbours)
    with pytest.raises(InputError, match="unknown metadata column 'tier'"):
        clf.classify(QUERIES, where=Where.parse(["tier=gold"]))
    # tuning under the filter: leave-one-out over the matching examples only
    tuned = clf.tune(where=after_march)
    assert tuned.n == 32 and clf.meta().tuning["where"] == {"created_at": {"gte": "2026-03-01T00:00:00Z"}}
    clf.store.close()


def _answers(kind: str, tmp: Path) -> list[object]:
    clf = _classifier(kind, tmp)
    clf.tune_all()
    out: list[object] = []
    for f in ([], ["product=loans"], ["created_at<2026-03-01"], ["created_at>=2026-03-01", "product=cards"]):
        preds, _, _ = clf.classify(QUERIES, where=Where.parse(f))
        out.append(
            [{n: (q.label, q.suggestion, [x.id for x in q.neighbours]) for n, q in p.sets.items()} for p in preds]
        )
    clf.store.close()
    return out


def test_backends_agree_with_filters_and_sets(tmp_path: Path) -> None:
    assert _answers("edge", tmp_path) == _answers("server", tmp_path)


@pytest.mark.parametrize("kind", BACKENDS)
def test_evaluate_relabel_and_undo_per_set(kind: str, tmp_path: Path) -> None:
    clf = _classifier(kind, tmp_path)
    clf.tune_all()
    test = [
        Example(f"t{i}", q, q.split()[0], {"priority": "urgent" if q.split()[0] in URGENT else "normal"})
        for i, q in enumerate(QUERIES)
    ]
    test[0] = Example("t0", test[0].text, test[0].label)  # no priority label: not scored for that set
    m = clf.evaluate(test)
    assert set(m["label_sets"]) == {"queue", "priority"}
    assert m["label_sets"]["priority"]["n"] == len(QUERIES) - 1 and m["label_sets"]["priority"]["accuracy"] == 1.0
    assert m["accuracy"] == m["label_sets"]["queue"]["accuracy"]
    e = clf.relabel("pin-2", "normal", label_set="priority")
    assert e.label == "pin" and e.labels == {"priority": "normal"} and e.meta["product"] == "loans"
    assert clf.get("pin-2").labels == {"priority": "normal"}
    with pytest.raises(InputError, match="no label set 'tier'"):
        clf.relabel("pin-2", "x", label_set="tier")
    history.undo(clf.store, "tickets")
    original = next(x for x in _examples() if x.id == "pin-2")
    assert clf.get("pin-2").labels == {"priority": "urgent"} and clf.get("pin-2").label == original.label
    info = clf.info()
    assert info["label_sets"] == ["queue", "priority"] and info["sets"]["priority"]["labels"]["urgent"] == 30
    clf.store.close()


def test_index_checks_label_sets_and_metadata(tmp_path: Path) -> None:
    clf = _classifier("edge", tmp_path)
    with pytest.raises(InputError, match="label sets queue, priority"):
        clf.index(_examples()[:2], label_sets=["queue"])
    bad = Example("x", "card x", "card", {}, {"created_at": "soon"})
    with pytest.raises(InputError, match=r"example 'x'.*'created_at' holds dates"):
        clf.index([bad], label_sets=["queue", "priority"])
    more = Example("y", "card y", "card", {}, {"tier": "3"})
    clf.index([more], label_sets=["queue", "priority"])
    assert clf.meta().payload_schema == {"product": "keyword", "created_at": "datetime", "tier": "number"}
    assert clf.get("y").meta == {"tier": 3.0}
    clf.store.close()
