"""transfer (a classifier on frozen embeddings) and knn (no training): the served ONNX encoder as is."""

from __future__ import annotations

import importlib
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DependencyError, InputError
from .forgetting import forgetting_figures, general_vectors
from .head import HEADS_FILE, Head, save_heads
from .settings import CLASSIFIERS, FinetuneSettings
from .tasks import TaskSet
from .validation import _metrics, evaluate_embeddings, onnx_embedder

__all__ = ["make_classifier", "run_frozen"]


def make_classifier(spec: str, params: dict[str, Any], seed: int) -> Any:
    """A scikit-learn estimator: logreg | svm | mlp | knn, or 'package.module:Class' / 'package.module.Class'."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise DependencyError("transfer learning needs scikit-learn: pip install 'knnclass[train]'") from None
    if spec == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(**{"C": 20.0, "max_iter": 2000, **params})
    if spec == "svm":
        from sklearn.svm import LinearSVC

        return LinearSVC(**{"C": 1.0, "random_state": seed, **params})
    if spec == "mlp":
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(**{"hidden_layer_sizes": (512,), "max_iter": 200, "random_state": seed, **params})
    if spec == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(**{"n_neighbors": 5, "metric": "cosine", "weights": "distance", **params})
    mod_name, _, cls_name = spec.replace(":", ".").rpartition(".")
    if not mod_name:
        raise InputError(f"classifier must be {', '.join(CLASSIFIERS)} or an import path, not {spec!r}")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise InputError(f"classifier {spec!r}: cannot import ({e})") from None
    try:
        return cls(**params)
    except TypeError as e:
        raise InputError(f"classifier {spec!r}: bad parameters ({e})") from None


def run_frozen(
    train: TaskSet, val: TaskSet, s: FinetuneSettings, out: Path, base: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """transfer (classifier on frozen embeddings) and knn (no training): the served ONNX encoder."""
    t0 = time.perf_counter()
    embed, source = onnx_embedder(base)
    train_vecs = embed(train.texts)
    val_vecs = embed(val.texts)
    t_embed = time.perf_counter() - t0
    heads: dict[str, Head] = {}
    t1 = time.perf_counter()
    extra: dict[str, Any] = {}
    if s.strategy == "transfer":
        for task in train.tasks:
            classes = sorted(set(train.labels[task]))
            if len(classes) < 2:  # nothing to learn: a constant head
                heads[task] = Head(
                    task, "linear", classes, [np.zeros((1, train_vecs.shape[1]), np.float32)], [np.zeros(1, np.float32)]
                )
                continue
            est = make_classifier(s.classifier, s.classifier_params, s.seed)
            est.fit(train_vecs, train.labels[task])
            head = Head.from_sklearn(task, est)
            if head is None:  # no numpy form: keep the estimator itself (needs scikit-learn to serve)
                (out / f"estimator-{task}.pkl").write_bytes(pickle.dumps(est))
                pred = [str(p) for p in est.predict(val_vecs)]
                extra.setdefault("estimator_validation", {})[task] = _metrics(val.labels[task], pred)
            else:
                heads[task] = head
        log(f"fitted {s.classifier} on {len(train.texts)} frozen embeddings in {time.perf_counter() - t1:.1f}s")
    t_fit = time.perf_counter() - t1
    ev = evaluate_embeddings(train_vecs, train, val_vecs, val, heads)
    for task, m in extra.get("estimator_validation", {}).items():
        ev[task]["head"] = m
    if heads:
        save_heads(out / HEADS_FILE, list(heads.values()))
    forgetting = forgetting_figures(embed, general_vectors(embed))
    forgetting["paraphrase_accuracy_before"] = forgetting["paraphrase_accuracy"]
    return {
        "encoder": source,
        "encoder_tuned": False,
        "heads": HEADS_FILE if heads else None,
        "validation": ev,
        "history": [],
        "best_epoch": None,
        "forgetting": forgetting,
        "timing": {"embed_s": round(t_embed, 2), "train_s": round(t_fit, 2)},
    }
