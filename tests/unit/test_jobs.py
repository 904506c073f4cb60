"""Fine-tuning jobs without training: heads, splits, kNN scoring, promote / rollback / prune."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from knnclass.classifier import Classifier
from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.errors import InputError
from knnclass.jobs.finetune import (
    GENERAL_PAIRS,
    FinetuneSettings,
    TaskSet,
    forgetting_figures,
    knn_hits,
    knn_predict,
    load_tasks,
    split_validation,
)
from knnclass.jobs.head import Head, load_heads, save_heads
from knnclass.jobs.reindex import promote, prune, rollback
from knnclass.store.base import CollectionMeta, Ref
from knnclass.store.edge import EdgeStore
from knnclass.voting import Rule

TOPICS = ["card", "transfer", "pin"]


class NamedFake(FakeEncoder):
    """A fake encoder with its own source name, so a loader can tell two apart."""

    def __init__(self, name: str, **kw: object):
        super().__init__(**kw)  # type: ignore[arg-type]
        self._name = name

    @property
    def source(self) -> str:
        return self._name


def _vectors(n: int = 60, d: int = 16, k: int = 3, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    labels = [f"c{i % k}" for i in range(n)]
    x = np.stack([centres[i % k] + 0.3 * rng.standard_normal(d) for i in range(n)]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


# --- heads ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["logreg", "svm", "mlp"])
def test_numpy_head_matches_sklearn(tmp_path: Path, kind: str) -> None:
    from knnclass.jobs.finetune import make_classifier

    x, y = _vectors()
    est = make_classifier(kind, {"max_iter": 300} if kind == "mlp" else {}, seed=0).fit(x, y)
    head = Head.from_sklearn("category", est)
    assert head is not None
    save_heads(tmp_path / "h.npz", [head])
    loaded = load_heads(tmp_path / "h.npz")["category"]
    pred, conf = loaded.predict(x)
    assert pred == [str(p) for p in est.predict(x)]
    assert np.all((conf > 0) & (conf <= 1))


def test_cosine_head_and_binary_linear(tmp_path: Path) -> None:
    x, y = _vectors(k=2)
    means = np.stack([x[[i for i, lab in enumerate(y) if lab == c]].mean(0) for c in ("c0", "c1")])
    cos = Head("category", "cosine", ["c0", "c1"], [means], scale=20.0)
    assert cos.predict(x)[0] == y
    from sklearn.linear_model import LogisticRegression

    lin = Head.from_sklearn("urgency", LogisticRegression().fit(x, y))
    assert lin is not None and lin.scores(x).shape == (len(x), 2)
    save_heads(tmp_path / "h.npz", [cos, lin])
    both = load_heads(tmp_path / "h.npz")
    assert set(both) == {"category", "urgency"} and both["category"].scale == 20.0
    assert both["urgency"].predict(x)[0] == y


# --- data, splits, scoring -------------------------------------------------------------------
def test_tasks_split_and_settings(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("text,category\n" + "".join(f"text {i},{'a' if i % 2 else 'b'}\n" for i in range(40)))
    m = tmp_path / "m.csv"
    m.write_text("category,urgency\na,urgent\nb,not_urgent\n")
    data = load_tasks(p, label_maps={"urgency": m})
    assert data.tasks == ["category", "urgency"]
    assert {(c, u) for c, u in zip(data.labels["category"], data.labels["urgency"], strict=True)} == {
        ("a", "urgent"),
        ("b", "not_urgent"),
    }
    tr, va = split_validation(data, 0.25, seed=1)
    tr2, va2 = split_validation(data, 0.25, seed=1)
    assert va.texts == va2.texts and tr.texts == tr2.texts
    assert len(va.texts) == 10 and sorted(set(va.labels["category"])) == ["a", "b"]
    assert not set(tr.texts) & set(va.texts)
    with pytest.raises(InputError):
        FinetuneSettings(strategy="bogus")
    with pytest.raises(InputError):
        FinetuneSettings(scheduler="steep")
    with pytest.raises(InputError, match="device must be auto, cpu or cuda"):
        FinetuneSettings(device="tpu")
    from knnclass.cli.jobs import _DEVICES, _LOSSES
    from knnclass.jobs.settings import DEVICES, LOSSES

    # the CLI keeps its own copy (it must not import the training stack): same losses, same default
    assert _LOSSES == LOSSES and FinetuneSettings().loss == LOSSES[0] == "mnrl"
    assert _DEVICES == DEVICES and FinetuneSettings().device == DEVICES[0] == "auto"


def test_knn_scoring_matches_brute_force() -> None:
    x, y = _vectors(n=90)
    q, _ = _vectors(n=30, seed=1)
    hits = knn_hits(x, y, q, width=5)
    sims = q @ x.T
    for row, s in zip(hits, sims, strict=True):
        assert [int(h.id) for h in row] == list(np.argsort(-s)[:5])
    pred = knn_predict(x, y, q, Rule("majority", "k", 1))
    assert pred == [y[int(np.argmax(s))] for s in sims]


def test_forgetting_figures() -> None:
    enc = FakeEncoder(dim=32)
    base = enc.embed([s for p in GENERAL_PAIRS for s in p])
    same = forgetting_figures(enc.embed, base)
    assert same["neighbour_agreement"] == 1.0 and same["n"] == 2 * len(GENERAL_PAIRS)
    other = forgetting_figures(NamedFake("x", dim=32, topics=["the"]).embed, base)
    assert other["neighbour_agreement"] < 1.0


# --- promote / rollback / prune ------------------------------------------------------------
def _examples(n: int = 8) -> list[Example]:
    return [Example(f"{t}-{i}", f"{t} question number {i}", t) for t in TOPICS for i in range(n)]


def _run_dir(tmp_path: Path, with_head: bool = False, enc: FakeEncoder | None = None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    val = TaskSet(
        [f"{t} help please {i}" for t in TOPICS for i in range(3)], {"category": [t for t in TOPICS for _ in range(3)]}
    )
    val.write_csv(run / "validation.csv")
    heads = None
    if with_head and enc is not None:
        from sklearn.linear_model import LogisticRegression

        ex = _examples()
        est = LogisticRegression(C=10).fit(enc.embed([e.text for e in ex]), [e.label for e in ex])
        head = Head.from_sklearn("category", est)
        assert head is not None
        save_heads(run / "heads.npz", [head])
        heads = "heads.npz"
    info = {"format": 1, "strategy": "full", "tasks": ["category"], "encoder": "fake-b", "encoder_tuned": False}
    (run / "run.json").write_text(json.dumps({**info, "heads": heads}))
    return run


def test_promote_rollback_prune(tmp_path: Path) -> None:
    enc_a, enc_b = NamedFake("fake-a", topics=TOPICS), NamedFake("fake-b", dim=24, topics=TOPICS, pull=4.0)
    st = EdgeStore(tmp_path / "store")
    clf = Classifier(st, "tickets", encoder=enc_a)
    clf.index(_examples())
    clf.tune()
    run = _run_dir(tmp_path, with_head=True, enc=enc_b)
    res = promote(st, "tickets", run, encoder=enc_b, serve="head")
    assert (res["from"], res["to"], res["count"]) == ("v1", "v2", 24)
    assert res["tuning"]["mode"] == "validation" and res["head"]["serve"]
    meta = st.get_meta(st.ref("tickets"))
    assert meta.encoder == enc_b.identity and meta.dim == 24 and meta.rule and meta.head
    new = Classifier(st, "tickets", encoder=enc_b)
    texts = ["my card is lost", "pin reset"]
    preds, ref, _ = new.classify(texts)
    assert ref.version == "v2" and [p.suggestion for p in preds] == ["card", "pin"]
    assert all(p.source == "head" for p in preds)
    assert preds[0].neighbours and preds[0].neighbours[0].label == "card"
    # the served answers are the head's own: the same labels as the head file predicts
    head = load_heads(run / "heads.npz")["category"]
    assert [p.suggestion for p in preds] == head.predict(enc_b.embed(texts))[0]
    # the old version is untouched and still searchable by a reader pinned to it
    assert st.count(Ref("tickets", "v1")) == 24 and st.get_meta(Ref("tickets", "v1")).encoder == enc_a.identity
    assert rollback(st, "tickets") == {"collection": "tickets", "from": "v2", "to": "v1"}
    assert Classifier(st, "tickets", encoder=enc_a).classify(["card"])[1].version == "v1"
    with pytest.raises(InputError):
        rollback(st, "tickets")
    st.switch("tickets", "v2")
    out = prune(st, "tickets")
    assert out["dropped"] == ["v1"] and st.versions("tickets") == ["v2"]
    st.close()


def test_promote_can_serve_the_head_blended_with_the_vote(tmp_path: Path) -> None:
    enc_a, enc_b = NamedFake("fake-a", topics=TOPICS), NamedFake("fake-b", dim=24, topics=TOPICS, pull=4.0)
    st = EdgeStore(tmp_path / "store")
    Classifier(st, "tickets", encoder=enc_a).index(_examples())
    run = _run_dir(tmp_path, with_head=True, enc=enc_b)
    res = promote(st, "tickets", run, encoder=enc_b, serve="ensemble")
    head = res["head"]
    assert head["served"] == "ensemble" and 0 < head["head_share"] < 1 and head["head_accuracy"] is None
    rule = Rule.from_dict(st.get_meta(st.ref("tickets")).rule or {})
    assert rule.blend == head["head_share"] and res["tuning"]["blends"]
    new = Classifier(st, "tickets", encoder=enc_b)
    preds, _, _ = new.classify(["my card is lost", "pin reset"])
    assert [p.suggestion for p in preds] == ["card", "pin"] and {p.source for p in preds} == {"ensemble"}
    # evaluate serves what promote scored on the run's validation rows
    val = [Example(str(i), t, lab) for i, (t, lab) in enumerate(_validation_rows())]
    m = new.evaluate(val)
    assert m["source"] == "ensemble" and m["guess_accuracy"] == pytest.approx(res["tuning"]["best"]["score"])
    # auto: the vote already answers every validation row right, so nothing beats it
    res = promote(st, "tickets", run, encoder=enc_b)
    assert res["head"]["served"] == "knn" and not res["head"]["serve"]
    assert Classifier(st, "tickets", encoder=enc_b).classify(["pin reset"])[0][0].source == "knn"
    with pytest.raises(InputError, match="serve must be"):
        promote(st, "tickets", run, encoder=enc_b, serve="centroid")
    st.close()


def _validation_rows() -> list[tuple[str, str]]:
    return [(f"{t} help please {i}", t) for t in TOPICS for i in range(3)]


def test_promote_keeps_label_sets_and_metadata_and_retunes_each_set(tmp_path: Path) -> None:
    from knnclass.store.base import Where

    enc_a, enc_b = NamedFake("fake-a", topics=TOPICS), NamedFake("fake-b", dim=24, topics=TOPICS, pull=4.0)
    urgency = {"card": "urgent", "transfer": "normal", "pin": "urgent"}
    ex = [
        Example(e.id, e.text, e.label, labels={"priority": urgency[e.label]}, meta={"product": e.label[0]})
        for e in _examples()
    ]
    st = EdgeStore(tmp_path / "store")
    clf = Classifier(st, "tickets", encoder=enc_a)
    clf.index(ex, label_sets=["category", "priority"])
    clf.tune_all()
    run = _run_dir(tmp_path)
    val = TaskSet(
        [f"{t} help please {i}" for t in TOPICS for i in range(3)],
        {"category": [t for t in TOPICS for _ in range(3)], "priority": [urgency[t] for t in TOPICS for _ in range(3)]},
    )
    val.write_csv(run / "validation.csv")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "tasks": ["category", "priority"]}))
    res = promote(st, "tickets", run, encoder=enc_b)
    assert set(res["label_sets"]) == {"category", "priority"}
    assert res["label_sets"]["priority"]["mode"] == "validation"  # tuned on the run's priority task
    meta = st.get_meta(st.ref("tickets"))
    assert meta.label_sets == ["category", "priority"] and meta.payload_schema == {"product": "keyword"}
    assert meta.sets and meta.sets["priority"]["rule"] and meta.sets["priority"]["policy"]
    new = Classifier(st, "tickets", encoder=enc_b)
    preds, ref, _ = new.classify(["my card is lost", "pin reset"], where=Where.parse(["product=c"]))
    assert ref.version == "v2"
    assert [p.sets["priority"].suggestion for p in preds] == ["urgent", "urgent"]
    assert all(n.id.startswith("card-") for p in preds for n in p.neighbours)  # the filter still resolves
    st.close()


def test_rollback_skips_a_version_left_by_a_killed_promote(tmp_path: Path) -> None:
    enc_a, enc_b = NamedFake("fake-a", topics=TOPICS), NamedFake("fake-b", dim=24, topics=TOPICS)
    st = EdgeStore(tmp_path / "store")
    clf = Classifier(st, "tickets", encoder=enc_a)
    clf.index(_examples())
    clf.tune()
    # a promote killed mid-way leaves v2 half-built (no rule), never switched to
    st.create_version("tickets", CollectionMeta(enc_b.identity, enc_b.source, enc_b.dim))
    assert promote(st, "tickets", _run_dir(tmp_path), encoder=enc_b)["to"] == "v3"
    assert rollback(st, "tickets")["to"] == "v1"
    st.switch("tickets", "v3")
    st.drop_version(Ref("tickets", "v1"))  # the recorded one pruned: no finished version is left
    with pytest.raises(InputError, match="no finished version"):
        rollback(st, "tickets")
    st.close()


def test_forcing_a_head_the_run_lacks_switches_nothing(tmp_path: Path) -> None:
    st = EdgeStore(tmp_path / "store")
    clf = Classifier(st, "tickets", encoder=NamedFake("fake-a", topics=TOPICS))
    clf.index(_examples())
    clf.tune()
    with pytest.raises(InputError, match="no head to serve"):
        promote(st, "tickets", _run_dir(tmp_path), encoder=NamedFake("fake-b", topics=TOPICS), serve="head")
    assert st.current_version("tickets") == "v1" and st.versions("tickets") == ["v1"]
    st.close()


def test_jobs_check_their_inputs_before_writing(tmp_path: Path) -> None:
    from knnclass.jobs.compare import compare
    from knnclass.jobs.finetune import run_finetune

    data = TaskSet(["card a", "pin b"], {"category": ["card", "pin"]})
    with pytest.raises(InputError, match="no strategy given"):
        compare(data, data, tmp_path / "cmp", [], FinetuneSettings())
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    with pytest.raises(InputError, match=r"no config\.json"):
        run_finetune(data, data, FinetuneSettings(strategy="transfer"), tmp_path / "run", base_model=not_a_model)
    assert not (tmp_path / "cmp").exists() and not (tmp_path / "run").exists()


def test_failed_promote_switches_nothing(tmp_path: Path) -> None:
    st = EdgeStore(tmp_path / "store")
    clf = Classifier(st, "tickets", encoder=NamedFake("fake-a", topics=TOPICS))
    clf.index(_examples())
    clf.tune()
    run = _run_dir(tmp_path)

    class Broken(NamedFake):
        def embed(self, texts, long="head"):  # type: ignore[no-untyped-def]
            raise RuntimeError("encoder died")

    with pytest.raises(RuntimeError):
        promote(st, "tickets", run, encoder=Broken("fake-b"))
    assert st.current_version("tickets") == "v1" and st.versions("tickets") == ["v1"]
    st.close()


def test_readers_during_promote_never_fail_or_mix(tmp_path: Path) -> None:
    """Readers pin a version per request; during promote they see v1 or v2, never both."""
    encs = {"fake-a": NamedFake("fake-a", topics=TOPICS), "fake-b": NamedFake("fake-b", dim=24, topics=TOPICS)}
    st = EdgeStore(tmp_path / "store")
    Classifier(st, "tickets", encoder=encs["fake-a"]).index(_examples(40))
    Classifier(st, "tickets", encoder=encs["fake-a"]).tune()
    run = _run_dir(tmp_path)
    errors: list[BaseException] = []
    seen: dict[int, list[str]] = {i: [] for i in range(3)}
    stop = threading.Event()

    def reader(i: int) -> None:
        while not stop.is_set():
            try:
                ref = st.ref("tickets")
                meta = st.get_meta(ref)
                enc = next(e for e in encs.values() if e.identity == meta.encoder)
                hits = st.search(ref, enc.embed(["card question"]), 5)[0]
                assert hits and all(h.id.startswith(("card", "transfer", "pin")) for h in hits)
                assert len(hits) == 5 and st.get_meta(ref).encoder == enc.identity
                seen[i].append(ref.version)
            except BaseException as e:
                errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while min(len(v) for v in seen.values()) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    promote(st, "tickets", run, encoder=encs["fake-b"])
    n_at_switch = {i: len(v) for i, v in seen.items()}
    while min(len(v) - n_at_switch[i] for i, v in seen.items()) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    st.close()
    assert not errors, errors[:3]
    for versions in seen.values():
        assert versions[0] == "v1" and versions[-1] == "v2"
        first_v2 = versions.index("v2")
        assert set(versions[first_v2:]) == {"v2"}  # once a reader sees v2 it never goes back


def _service_promote(tmp_path: Path, enc_b: NamedFake) -> tuple[list[int], list[str]]:
    """Promote to v2, then roll back to v1, while a service answers classify calls."""
    from fastapi.testclient import TestClient

    from knnclass.service import create_app

    enc_a = NamedFake("fake-a", topics=TOPICS)
    encs = {"fake-a": enc_a, "fake-b": enc_b}
    st = EdgeStore(tmp_path / "store")
    seed = Classifier(st, "tickets", encoder=enc_a)
    seed.index(_examples(20))
    seed.tune()
    clf = Classifier(st, "tickets", encoder_loader=lambda source: encs[source])
    run = _run_dir(tmp_path)
    statuses: list[int] = []
    versions: list[str] = []
    with TestClient(create_app(clf)) as client:

        def call() -> None:
            r = client.post("/v1/classify", json={"text": "my card question"})
            statuses.append(r.status_code)
            if r.status_code == 200:
                versions.append(r.json()["version"])
                assert r.json()["predictions"][0]["label"] == "card"

        call()  # served before anything changes: a fast promote may finish before the loop's first call
        for job in (lambda: promote(st, "tickets", run, encoder=enc_b), lambda: rollback(st, "tickets")):
            done = threading.Event()

            def run_job(job: Any = job, done: threading.Event = done) -> None:
                try:
                    job()
                finally:
                    done.set()

            t = threading.Thread(target=run_job)
            t.start()
            n0 = len(statuses)
            while (not done.is_set() or len(statuses) - n0 < 20) and len(statuses) - n0 < 2000:
                call()
            t.join()
            for _ in range(5):
                call()
    return statuses, versions


def test_promote_same_encoder_with_service_running(tmp_path: Path) -> None:
    statuses, versions = _service_promote(tmp_path, NamedFake("fake-a", topics=TOPICS))
    assert set(statuses) == {200}, f"{statuses.count(200)} ok of {len(statuses)}"
    assert versions[0] == "v1" and "v2" in versions and versions[-1] == "v1"  # promoted, then rolled back


def test_promote_new_encoder_with_service_running(tmp_path: Path) -> None:
    statuses, versions = _service_promote(tmp_path, NamedFake("fake-b", dim=24, topics=TOPICS))
    assert set(statuses) == {200}, f"{statuses.count(200)} ok of {len(statuses)}"
    assert versions[0] == "v1" and "v2" in versions and versions[-1] == "v1"  # promoted, then rolled back


def test_training_device_follows_what_torch_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from knnclass.errors import DependencyError
    from knnclass.jobs.train import torch_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch_device("auto") == "cpu" and torch_device("cpu") == "cpu"
    with pytest.raises(DependencyError, match="torch sees no CUDA device"):
        torch_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_device("auto") == "cuda" and torch_device("cuda") == "cuda" and torch_device("cpu") == "cpu"
