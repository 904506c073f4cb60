"""The novelty model (low-rank Mahalanobis over class means): exact on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from knnclass.calibration import auroc
from knnclass.classifier import Classifier
from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.policy import (
    NOVELTY_FEATURES,
    Novelty,
    Policy,
    fit_novelty,
    hits_to_arrays,
    reasons,
    score_rows,
    typical_similarity,
)
from knnclass.store.base import Hit
from knnclass.store.edge import EdgeStore
from knnclass.tuning import Objective, tune_rule
from knnclass.voting import FEATURES


def _clusters(rng: np.random.Generator, n_per: int, dim: int = 16, n_cls: int = 4) -> tuple[np.ndarray, list[str]]:
    """Classes that vary a lot along dims 0-3 and hardly at all along the others."""
    centres = np.zeros((n_cls, dim))
    centres[np.arange(n_cls), np.arange(n_cls)] = 3.0
    spread = np.r_[np.full(4, 1.0), np.full(dim - 4, 0.02)]
    x = np.vstack([c + rng.normal(size=(n_per, dim)) * spread for c in centres])
    return x, [f"c{i}" for i in range(n_cls) for _ in range(n_per)]


def _off(rng: np.random.Generator, n: int, dim: int = 16, offset: float = 1.5) -> np.ndarray:
    """Near class c0 in plain distance, but `offset` along a direction in which no class ever varies."""
    spread = np.r_[np.full(4, 1.0), np.full(dim - 4, 0.02)]
    x = np.zeros((n, dim))
    x[:, 0] = 3.0
    x += rng.normal(size=(n, dim)) * spread
    x[:, 9] += offset
    return x


def test_distances_rank_what_no_class_looks_like_above_what_each_does() -> None:
    rng = np.random.default_rng(0)
    x, y = _clusters(rng, 200)
    model = fit_novelty(x, y, rank=16)
    assert model is not None and model.residual == (0.0, 0.0)  # the basis spans all 16 dims
    inside = model.features(_clusters(rng, 50)[0])
    outside = model.features(_off(rng, 50))
    for j in range(len(NOVELTY_FEATURES)):
        assert auroc(np.r_[inside[:, j], outside[:, j]], np.r_[np.zeros(200), np.ones(50)] > 0) > 0.99
    # plain (Euclidean) distance to the nearest class mean cannot tell them apart as well
    means = np.stack([x[np.array(y) == c].mean(axis=0) for c in sorted(set(y))])
    plain = [
        np.linalg.norm(v[:, None] - means[None], axis=2).min(axis=1) for v in (_clusters(rng, 50)[0], _off(rng, 50))
    ]
    assert auroc(np.r_[plain[0], plain[1]], np.r_[np.zeros(200), np.ones(50)] > 0) < 0.9


def test_a_low_rank_model_keeps_a_residual_and_round_trips_exactly_and_small() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 384)).astype(np.float32)
    y = [f"label_{i % 77}" for i in range(2000)]
    model = fit_novelty(x, y)
    assert model is not None and model.basis.shape == (384, 32) and min(model.residual) > 0
    stored = json.loads(json.dumps(model.to_dict()))
    assert len(json.dumps(stored)) < 50_000  # about 43 kB at 384 dims, 77 labels, rank 32
    again = Novelty.from_dict(stored)
    assert again is model  # decoded once per digest: meta.json is read per request
    stored["digest"] = ""
    fresh = Novelty.from_dict(stored)
    assert fresh is not model
    q = rng.normal(size=(5, 384))
    assert np.array_equal(fresh.features(q), model.features(q))  # tuning rounded through the stored form
    with pytest.raises(ValueError, match="dimension 384"):
        model.features(q[:, :10])
    assert fit_novelty(x[:2], y[:2]) is None


def _knn(train: np.ndarray, labels: list[str], queries: np.ndarray, width: int) -> list[list[Hit]]:
    unit = train / np.linalg.norm(train, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q @ unit.T
    order = np.argsort(-sims, axis=1)[:, :width]
    return [[Hit(str(j), labels[j], float(sims[i, j])) for j in row] for i, row in enumerate(order)]


def test_tuning_with_unknown_rows_uses_the_distances_and_serving_reproduces_them() -> None:
    rng = np.random.default_rng(2)
    x, y = _clusters(rng, 150)
    vx, vy = _clusters(rng, 40)
    val = np.vstack([vx, _off(rng, 60, offset=0.6)])
    truth = [*vy, *["OOS"] * 60]
    loo = _knn(x, y, x, 11)
    typical = typical_similarity(y, [row[1:] for row in loo])
    hits = _knn(x, y, val, 50)
    model = fit_novelty(x, y, rank=16)
    balanced = Objective(unknown_weight=0.5)
    plain = tune_rule(truth, hits, len(y), "OOS", typical=typical, objective=balanced)
    res = tune_rule(truth, hits, len(y), "OOS", typical=typical, objective=balanced, novelty=model, vectors=val)
    assert plain.policy is not None and plain.policy.novelty is None
    assert res.policy is not None and res.policy.novelty is model and res.policy.known is not None
    assert res.policy.known.features == (*FEATURES, *NOVELTY_FEATURES)
    assert res.policy.calibration.features == FEATURES  # P(right) keeps the neighbourhood alone
    # on balanced accuracy the distances lift both sides
    assert all(res.point[k] >= plain.point[k] for k in ("in_scope_accuracy", "unknown_recall"))
    values = [(r.point["in_scope_accuracy"] + r.point["unknown_recall"]) / 2 for r in (plain, res)]
    assert values[1] > values[0] + 0.1
    # a fresh sample served with the stored policy: the distances make the difference there too
    tx, _ = _clusters(rng, 40)
    test = np.vstack([tx, _off(rng, 60, offset=0.6)])
    unknown = np.r_[np.zeros(160), np.ones(60)] > 0
    labels = sorted(set(y))
    served = {}
    for name, r in (("plain", plain), ("novelty", res)):
        assert r.policy is not None
        policy = Policy.from_dict(json.loads(json.dumps(r.policy.to_dict())))
        codes, scores = hits_to_arrays(_knn(x, y, test, 50), labels, 50)
        sc = score_rows(codes, scores, labels, r.best.rule, r.best.k, policy, vectors=test)
        served[name] = auroc(-sc.familiarity, unknown), np.mean([w == "unknown" for w in reasons(sc, r.best.rule)])
    assert served["novelty"][0] > 0.99 and served["novelty"][0] > served["plain"][0] + 0.03
    with pytest.raises(ValueError, match="needs the query vectors"):
        score_rows(codes, scores, labels, res.best.rule, res.best.k, res.policy)
    with pytest.raises(ValueError, match="one vector per tuning row"):
        tune_rule(truth, hits, len(y), "OOS", typical=typical, novelty=model, vectors=val[:3])


def test_without_unknown_rows_no_model_is_stored() -> None:
    rng = np.random.default_rng(3)
    x, y = _clusters(rng, 60)
    vx, vy = _clusters(rng, 20)
    loo = _knn(x, y, x, 11)
    typical = typical_similarity(y, [row[1:] for row in loo])
    res = tune_rule(vy, _knn(x, y, vx, 30), len(y), typical=typical, novelty=fit_novelty(x, y), vectors=vx)
    assert res.policy is not None and res.policy.novelty is None and res.policy.to_dict()["novelty"] is None


TOPICS = ["card", "transfer", "pin"]


def test_classifier_stores_the_model_on_the_version_and_serves_it(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "store")
    try:
        clf = Classifier(store, "t", FakeEncoder(topics=TOPICS))
        train = [Example(f"{t}-{i}", f"{t} problem {i} please help {i * 7 % 5}", t) for t in TOPICS for i in range(12)]
        clf.index(train)
        val = [Example(f"v{i}", f"{t} again {i}", t) for i, t in enumerate(TOPICS * 4)]
        val += [Example(f"u{i}", f"completely unrelated question number {i}", "OOS") for i in range(12)]
        result = clf.tune(val, unknown_label="OOS")
        meta = clf.meta()
        assert meta.policy is not None and meta.policy["novelty"]["labels"] == sorted(TOPICS)
        assert result.policy is not None and result.policy.known is not None
        assert result.policy.known.features[-2:] == NOVELTY_FEATURES
        m = clf.evaluate(val, unknown_label="OOS")
        assert m["in_scope_accuracy"] > 0.9 and m["unknown_recall"] > 0.5 and m["auroc_unknown"] > 0.9
        p = clf.classify(["completely unrelated question number 3"])[0][0]
        assert p.abstained and p.reason == "unknown" and p.suggestion in TOPICS
        clf.tune()  # leave-one-out: no unknown rows, no model kept
        assert clf.meta().policy is not None and clf.meta().policy["novelty"] is None  # type: ignore[index]
    finally:
        store.close()
