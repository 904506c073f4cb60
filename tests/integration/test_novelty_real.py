"""The novelty model on real MiniLM vectors: a small Banking77 open set, scored like classify does."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import numpy as np

from knnclass.calibration import auroc
from knnclass.policy import Policy, fit_novelty, hits_to_arrays, score_rows, typical_similarity
from knnclass.store.base import Hit
from knnclass.tuning import tune_rule


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _knn(
    train: np.ndarray, labels: list[str], queries: np.ndarray, width: int, skip_self: bool = False
) -> list[list[Hit]]:
    sims = queries @ train.T
    if skip_self:
        np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1)[:, :width]
    return [[Hit(str(j), labels[j], float(sims[i, j])) for j in row] for i, row in enumerate(order)]


def test_mahalanobis_features_rank_held_out_intents_better(real_encoder: Any, data_dir: Path) -> None:
    rng = random.Random(0)
    train, test = _rows(data_dir / "train.csv"), _rows(data_dir / "test.csv")
    intents = rng.sample(sorted({r["category"] for r in train}), 24)
    held = set(intents[:6])
    by: dict[str, list[str]] = {}
    for r in train:
        if r["category"] in intents:
            by.setdefault(r["category"], []).append(r["text"])
    index, index_y, val, val_y = [], [], [], []
    for lab in intents:
        texts = by[lab]
        rng.shuffle(texts)
        if lab in held:
            val += texts[:20]
            val_y += ["unknown"] * 20
        else:
            index += texts[10:60]
            index_y += [lab] * len(texts[10:60])
            val += texts[:10]
            val_y += [lab] * 10
    tests = [r for r in test if r["category"] in intents]
    test_y = ["unknown" if r["category"] in held else r["category"] for r in tests]
    x = real_encoder.embed(index).astype(np.float64)
    xv = real_encoder.embed(val).astype(np.float64)
    xt = real_encoder.embed([r["text"] for r in tests]).astype(np.float64)
    typical = typical_similarity(index_y, _knn(x, index_y, x, 10, skip_self=True))
    hits = _knn(x, index_y, xv, 100)
    model = fit_novelty(x, index_y)
    assert model is not None and model.basis.shape == (384, 32)
    unknown = np.array(test_y) == "unknown"
    labels = sorted(set(index_y))
    got = {}
    for name, kw in (("plain", {}), ("novelty", {"novelty": model, "vectors": xv})):
        res = tune_rule(val_y, hits, len(index_y), "unknown", typical=typical, **kw)
        assert res.policy is not None
        policy = Policy.from_dict(res.policy.to_dict())
        width = max(res.best.k, 3)
        codes, scores = hits_to_arrays(_knn(x, index_y, xt, width), labels, width)
        sc = score_rows(codes, scores, labels, res.best.rule, res.best.k, policy, vectors=xt)
        got[name] = auroc(-sc.familiarity, unknown)
    assert got["novelty"] > 0.9 and got["novelty"] > got["plain"], got
