"""Scoring on the validation split: exact kNN (the spine's vote and rule tuner), heads, and
their ensemble (the head blended with the vote).

numpy only; the same functions score every strategy, so their figures compare.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import score_predictions
from ..policy import guesses, head_columns, hits_to_arrays
from ..store.base import Hit
from ..tuning import BLENDS, K_MAX, TuningResult, tune_rule
from ..voting import Rule, vote_batch
from .head import Head
from .tasks import TaskSet

__all__ = [
    "embed_cached",
    "ensemble_predict",
    "evaluate_embeddings",
    "fmt",
    "knn_hits",
    "knn_predict",
    "label_confusions",
    "onnx_embedder",
    "selection_score",
    "tune_knn",
]


def knn_hits(train_vecs: np.ndarray, labels: Sequence[str], query: np.ndarray, width: int = K_MAX) -> list[list[Hit]]:
    """Exact cosine neighbours of each query among the train vectors, as store Hits."""
    width = min(width, len(labels))
    out: list[list[Hit]] = []
    for start in range(0, len(query), 512):
        sims = query[start : start + 512] @ train_vecs.T
        top = np.argpartition(-sims, width - 1, axis=1)[:, :width]
        part = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        part = np.take_along_axis(part, order, axis=1)
        for r in range(len(top)):
            out.append([Hit(str(j), labels[j], float(s)) for j, s in zip(top[r], part[r], strict=True)])
    return out


def knn_predict(train_vecs: np.ndarray, labels: Sequence[str], query: np.ndarray, rule: Rule) -> list[str | None]:
    """Predictions of the vote `rule` (exact search), as `classify` would make them."""
    names = sorted(set(labels))
    code = {lab: i for i, lab in enumerate(names)}
    k = min(rule.k(len(labels)), K_MAX, len(labels))
    hits = knn_hits(train_vecs, labels, query, k)
    codes = np.array([[code[h.label] for h in row] for row in hits])
    scores = np.array([[h.score for h in row] for row in hits])
    winner, conf, _, _ = vote_batch(codes, scores, k, rule.vote, len(names))
    return [names[w] if w >= 0 and c >= rule.threshold else None for w, c in zip(winner, conf, strict=True)]


def ensemble_predict(
    train_vecs: np.ndarray, labels: Sequence[str], query: np.ndarray, rule: Rule, head: Head
) -> list[str]:
    """Predictions of the head blended with the vote `rule` at its head share (exact search), as served."""
    names = sorted(set(labels) | set(head.labels))
    k = min(rule.k(len(labels)), K_MAX, len(labels))
    codes, scores = hits_to_arrays(knn_hits(train_vecs, labels, query, k), names, k)
    guess, *_ = guesses(codes, scores, len(names), rule, k, head_columns(head.labels, head.probabilities(query), names))
    return [names[g] for g in guess]


def tune_knn(
    train_vecs: np.ndarray, labels: Sequence[str], val_vecs: np.ndarray, val_labels: Sequence[str]
) -> TuningResult:
    """The spine's rule tuning (top-k / top-k%, majority / weighted) on a validation set."""
    return tune_rule(list(val_labels), knn_hits(train_vecs, labels, val_vecs), len(labels))


def label_confusions(vecs: np.ndarray, codes: np.ndarray, n_labels: int, k: int = 10) -> np.ndarray:
    """(n_labels, n_labels) counts: how often an example of label a has a label-b example among
    its k nearest others (a != b) — the index's own confusions, where hard negatives live."""
    out = np.zeros((n_labels, n_labels), dtype=np.int64)
    k = min(k, len(codes) - 1)
    if k < 1:
        return out
    for start in range(0, len(vecs), 512):
        sims = vecs[start : start + 512] @ vecs.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = -np.inf  # not its own neighbour
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        mine = np.repeat(codes[start : start + len(sims)], k)
        theirs = codes[top].reshape(-1)
        other = mine != theirs
        np.add.at(out, (mine[other], theirs[other]), 1)
    return out


def _metrics(truth: Sequence[str], pred: Sequence[str | None]) -> dict[str, float]:
    m = score_predictions(list(truth), list(pred))
    return {"accuracy": round(m["accuracy"], 5), "macro_f1": round(m["macro_f1"], 5)}


def _head_loss(head: Head, vecs: np.ndarray, truth: Sequence[str]) -> float:
    """Mean cross-entropy of the head on labelled vectors (labels it does not know are skipped)."""
    col = {lab: i for i, lab in enumerate(head.labels)}
    rows = [(i, col[t]) for i, t in enumerate(truth) if t in col]
    if not rows:
        return float("nan")
    z = head.scores(vecs[[i for i, _ in rows]]).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return round(float(-np.mean(logp[np.arange(len(rows)), [c for _, c in rows]])), 5)


def evaluate_embeddings(
    train_vecs: np.ndarray, train: TaskSet, val_vecs: np.ndarray, val: TaskSet, heads: dict[str, Head] | None
) -> dict[str, Any]:
    """Per task: kNN (rule tuned on validation) and head metrics on validation."""
    out: dict[str, Any] = {}
    for task in train.tasks:
        hits = knn_hits(train_vecs, train.labels[task], val_vecs)  # searched once: the vote's and the ensemble's tuning
        tuned = tune_rule(list(val.labels[task]), hits, len(train.labels[task]))
        pred = knn_predict(train_vecs, train.labels[task], val_vecs, tuned.best.rule)
        res: dict[str, Any] = {"knn": {**_metrics(val.labels[task], pred), "rule": tuned.best.rule.to_dict()}}
        if heads and task in heads:
            hp, _ = heads[task].predict(val_vecs)
            res["head"] = {
                **_metrics(val.labels[task], hp),
                "loss": _head_loss(heads[task], val_vecs, val.labels[task]),
            }
            # the vote always has a say (shares of BLENDS); its score is that of the served guesses
            rows = (heads[task].labels, heads[task].probabilities(val_vecs))
            ens = tune_rule(list(val.labels[task]), hits, len(train.labels[task]), head=rows, blends=BLENDS).best
            res["ensemble"] = {
                "accuracy": round(ens.score, 5),
                "macro_f1": round(ens.macro_f1, 5),
                "rule": ens.rule.to_dict(),
            }
        out[task] = res
    return out


def selection_score(ev: dict[str, Any], knn_only: bool = False) -> float:
    """Model selection: mean over tasks of the better of kNN and head accuracy (kNN alone if asked)."""
    return float(
        np.mean(
            [
                r["knn"]["accuracy"] if knn_only else max(r["knn"]["accuracy"], r.get("head", {}).get("accuracy", 0.0))
                for r in ev.values()
            ]
        )
    )


def fmt(ev: dict[str, Any]) -> str:
    """One log line of validation figures."""
    parts = []
    for task, r in ev.items():
        p = f"{task} knn={r['knn']['accuracy']:.4f}"
        if "head" in r:
            p += f" head={r['head']['accuracy']:.4f}"
        if "ensemble" in r:
            p += f" ensemble={r['ensemble']['accuracy']:.4f}"
        parts.append(p)
    return "; ".join(parts)


_EMBEDDINGS: dict[tuple[str, str], np.ndarray] = {}


def embed_cached(enc: Any, texts: Sequence[str]) -> np.ndarray:
    """`enc.embed(texts)`, remembered per (encoder identity, texts) within this process:
    a comparison embeds the same train set with the same encoder several times."""
    key = (str(enc.identity), hashlib.sha256("\x1f".join(texts).encode()).hexdigest())
    if key not in _EMBEDDINGS:
        if len(_EMBEDDINGS) >= 8:
            _EMBEDDINGS.pop(next(iter(_EMBEDDINGS)))
        _EMBEDDINGS[key] = enc.embed(list(texts))
    return _EMBEDDINGS[key]


def onnx_embedder(encoder_dir: Path | None) -> tuple[Callable[[list[str]], np.ndarray], str]:
    """The served (ONNX) encoder at `encoder_dir` as a cached embed function, and its source."""
    from ..encoders import default_model_dir, load_encoder

    if encoder_dir is not None and Path(encoder_dir).resolve() == default_model_dir().resolve():
        encoder_dir = None  # the default model: reuse its cached export
    enc = load_encoder(encoder_dir)
    return (lambda texts: embed_cached(enc, texts)), str(enc.source)
