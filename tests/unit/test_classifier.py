"""Classifier over a real Qdrant Edge store with the deterministic fake encoder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from knnclass.classifier import Classifier
from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.errors import (
    CollectionNotFoundError,
    EncoderMismatchError,
    ExampleNotFoundError,
    InputError,
    NotTunedError,
    StoreCorruptError,
    StoreLockedError,
)
from knnclass.store.edge import EdgeStore
from knnclass.voting import Rule

TOPICS = ["card", "transfer", "pin"]


def examples(n_per: int = 12) -> list[Example]:
    out = []
    for t in TOPICS:
        for i in range(n_per):
            text = f"{t} problem {i} please help {i * 7 % 5}"
            out.append(Example(f"{t}-{i}", text, t))
    return out


@pytest.fixture()
def clf(edge_store: EdgeStore) -> Classifier:
    c = Classifier(edge_store, "tickets", encoder=FakeEncoder(topics=TOPICS))
    c.index(examples())
    return c


def test_index_is_idempotent_and_stamps_encoder(clf: Classifier) -> None:
    ref = clf.ref()
    assert clf.store.count(ref) == 36
    clf.index(examples())
    assert clf.store.count(clf.ref()) == 36
    meta = clf.meta()
    assert meta.encoder == FakeEncoder(topics=TOPICS).identity and meta.dim == 32
    assert clf.store.label_counts(ref) == {"card": 12, "pin": 12, "transfer": 12}


def test_leave_one_out_tuning_scores_a_bounded_sample(clf: Classifier, monkeypatch: pytest.MonkeyPatch) -> None:
    import knnclass.classifier as module

    monkeypatch.setattr(module, "LOO_ROWS", 20)
    result = clf.tune()
    assert result.n == 20  # of 36 stored: the first 20 in (hashed-id) scroll order
    assert len(clf.loo_neighbours(clf.ref())) == 36  # suspects and duplicates still see every example
    again = clf.tune()
    assert again.best.rule == result.best.rule  # the same sample each time


def test_classify_needs_tuning_then_returns_evidence(clf: Classifier) -> None:
    with pytest.raises(NotTunedError):
        clf.classify(["my card broke"])
    result = clf.tune()
    assert result.mode == "leave-one-out" and result.n == 36
    assert result.best.score == pytest.approx(1.0)
    assert result.best.rule.k(36) == 1  # simplest rule among equals
    preds, _, _ = clf.classify(["my card broke", "a transfer is late", "forgot pin"])
    assert [p.label for p in preds] == ["card", "transfer", "pin"]
    p = preds[0]
    assert not p.abstained and 0 < p.confidence <= 1
    assert p.neighbours and p.neighbours[0].label == "card"
    assert all(a.score >= b.score for a, b in zip(p.neighbours, p.neighbours[1:], strict=False))
    assert p.neighbours[0].id.startswith("card-")


def test_rule_and_k_overrides(clf: Classifier) -> None:
    clf.tune()
    preds, _, rule = clf.classify(["card"], k=5)
    assert rule.k(36) == 5 and len(preds[0].neighbours) == 5
    preds, _, rule = clf.classify(["card"], rule=Rule("weighted", "pct", 50))
    assert len(preds[0].neighbours) == 18


def test_a_batch_of_requests_answers_each_as_if_alone(clf: Classifier) -> None:
    """One search and vote serve the requests that share a rule; each still gets its own answers."""
    from knnclass.classifier import ClassifyRequest

    clf.tune()
    reqs = [
        ClassifyRequest(["my card broke", "a transfer is late"]),
        ClassifyRequest(["forgot pin"], rule=Rule("weighted", "pct", 50)),
        ClassifyRequest(["pin card transfer"], k=5),
        ClassifyRequest(["x" * 10], truncate=False),
        ClassifyRequest(["transfer", "card", "zzz qqq"]),
    ]
    together = clf.classify_batch(reqs)
    for req, got in zip(reqs, together, strict=True):
        (alone,) = clf.classify_batch([req])
        assert not isinstance(got, Exception) and not isinstance(alone, Exception)
        assert [p.to_dict() for p in got.predictions] == [p.to_dict() for p in alone.predictions]
        assert got.rule == alone.rule and len(got.predictions) == len(req.texts)
    assert [len(r.predictions[0].neighbours) for r in together if not isinstance(r, Exception)][1:3] == [18, 5]


def test_tune_on_validation_with_unknown_label_learns_a_novelty_floor(clf: Classifier) -> None:
    val = [Example(f"v{i}", f"{t} again {i}", t) for i, t in enumerate(TOPICS * 4)]
    val += [Example(f"u{i}", f"completely unrelated question number {i}", "OOS") for i in range(12)]
    result = clf.tune(val, unknown_label="OOS")
    assert result.best.rule.novelty is not None and result.policy is not None and result.policy.known is not None
    assert result.best.unknown_recall is not None and result.best.unknown_recall > 0.5
    m = clf.evaluate(val, unknown_label="OOS")
    assert m["in_scope_accuracy"] > 0.9 and m["unknown_recall"] > 0.5 and m["auroc_unknown"] > 0.9
    assert 0 < m["abstain_rate"] < 1 and m["reasons"].get("unknown", 0) >= 6
    assert (m["threshold"], m["novelty"]) == (result.best.rule.threshold, result.best.rule.novelty)
    # abstained answers keep their best guess and its probability
    p = clf.classify(["completely unrelated question number 3"])[0][0]
    assert p.abstained and p.reason == "unknown" and p.label is None and p.suggestion in TOPICS


def test_scoring_a_file_that_cannot_match_the_collection_is_refused(clf: Classifier) -> None:
    clf.tune()
    urgency = [Example(f"w{i}", f"{t} again {i}", "urgent" if i % 2 else "not_urgent") for i, t in enumerate(TOPICS)]
    with pytest.raises(InputError, match="none of the file's labels"):
        clf.evaluate(urgency)
    with pytest.raises(InputError, match="none of the file's labels"):
        clf.tune(urgency)
    right = [Example(f"v{i}", f"{t} again {i}", t) for i, t in enumerate(TOPICS)]
    with pytest.raises(InputError, match="no row is labelled with the --unknown-label 'OOS'"):
        clf.evaluate(right, unknown_label="OOS")
    assert clf.evaluate(right)["n"] == len(TOPICS)


def test_live_add_relabel_delete(clf: Classifier) -> None:
    clf.tune()
    clf.add([Example("new-1", "refund refund refund", "refund")])
    preds, _, _ = clf.classify(["refund refund refund"])
    assert preds[0].neighbours[0].id == "new-1" and preds[0].label == "refund"
    clf.relabel("new-1", "money_back")
    assert clf.get("new-1").label == "money_back"
    assert clf.classify(["refund refund refund"])[0][0].label == "money_back"
    clf.delete("new-1")
    with pytest.raises(ExampleNotFoundError):
        clf.get("new-1")
    with pytest.raises(ExampleNotFoundError):
        clf.delete("new-1")
    with pytest.raises(InputError):
        clf.relabel("card-1", "  ")


def test_encoder_mismatch_is_an_error(clf: Classifier) -> None:
    other = Classifier(clf.store, "tickets", encoder=FakeEncoder(topics=["other"]))
    with pytest.raises(EncoderMismatchError, match="indexed with encoder"):
        other.index(examples(1))
    assert clf.store.count(clf.ref()) == 36


def test_info(clf: Classifier) -> None:
    clf.tune()
    d = clf.info()
    assert d["count"] == 36 and d["collection"] == "tickets" and d["version"] == "v1"
    assert d["labels"] == {"card": 12, "pin": 12, "transfer": 12}
    assert d["rule"]["vote"] in ("majority", "weighted")
    json.dumps(d)


def test_unknown_collection(edge_store: EdgeStore) -> None:
    c = Classifier(edge_store, "nope", encoder=FakeEncoder())
    with pytest.raises(CollectionNotFoundError, match="no collection 'nope'"):
        c.info()


def test_store_survives_reopen(store_path: Path) -> None:
    st = EdgeStore(store_path)
    c = Classifier(st, "tickets", encoder=FakeEncoder(topics=TOPICS))
    c.index(examples(3))
    c.tune()
    st.close()
    st2 = EdgeStore(store_path, create=False)
    c2 = Classifier(st2, "tickets", encoder=FakeEncoder(topics=TOPICS))
    assert c2.info()["count"] == 9
    assert c2.classify(["pin"])[0][0].label == "pin"
    st2.close()


def test_second_process_gets_a_clear_lock_error(store_path: Path) -> None:
    st = EdgeStore(store_path)
    code = (
        "import sys\nfrom knnclass.store.edge import EdgeStore\nfrom knnclass.errors import StoreLockedError\n"
        f"try:\n    EdgeStore({str(store_path)!r})\nexcept StoreLockedError as e:\n    print(e); sys.exit(9)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 9, r.stderr
    assert "in use by process" in r.stdout and "only one process" in r.stdout
    st.close()
    with pytest.raises(StoreLockedError):  # same process, second handle: also refused
        st_a = EdgeStore(store_path)
        try:
            EdgeStore(store_path)
        finally:
            st_a.close()


def test_foreign_directory_is_refused_not_overwritten(tmp_path: Path) -> None:
    d = tmp_path / "foreign"
    d.mkdir()
    (d / "important.txt").write_text("keep me")
    with pytest.raises(StoreCorruptError, match="not a knnclass store"):
        EdgeStore(d)
    assert (d / "important.txt").read_text() == "keep me"
    assert sorted(p.name for p in d.iterdir()) == ["important.txt"]


def test_damaged_meta_is_reported(store_path: Path) -> None:
    st = EdgeStore(store_path)
    Classifier(st, "tickets", encoder=FakeEncoder()).index(examples(1))
    st.close()
    meta = store_path / "collections" / "tickets" / "v1" / "meta.json"
    meta.write_text("{ truncated")
    st = EdgeStore(store_path)
    with pytest.raises(StoreCorruptError, match="damaged"):
        Classifier(st, "tickets", encoder=FakeEncoder()).info()
    st.close()


def test_versions_switch_atomically(edge_store: EdgeStore) -> None:
    c = Classifier(edge_store, "tickets", encoder=FakeEncoder(topics=TOPICS))
    c.index(examples(2))
    v1 = c.ref()
    v2 = edge_store.create_version("tickets", c.meta(v1))
    assert edge_store.current_version("tickets") == "v1"
    edge_store.upsert(v2, examples(1), FakeEncoder(topics=TOPICS).embed([e.text for e in examples(1)]))
    edge_store.switch("tickets", v2.version)
    assert c.ref() == v2 and edge_store.count(v2) == 3 and edge_store.count(v1) == 6
    with pytest.raises(InputError):
        edge_store.drop_version(v2)
    edge_store.drop_version(v1)
    assert edge_store.versions("tickets") == ["v2"]
