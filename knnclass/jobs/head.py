"""Classification heads servable with numpy alone (no torch, no scikit-learn at serving).

A head maps L2-normalised embeddings to label scores. Three kinds are stored in one
``.npz`` file: ``cosine`` (normalised weights x scale, as trained by fine-tuning),
``linear`` (coef/intercept, e.g. logistic regression or a linear SVM) and ``mlp``
(ReLU/tanh/logistic layers as scikit-learn's MLPClassifier holds them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["Head", "cached_heads", "load_heads", "save_heads"]

HEADS_FILE = "heads.npz"


def _act(name: str, x: np.ndarray) -> np.ndarray:
    y: np.ndarray
    if name == "relu":
        y = np.maximum(x, 0.0)
    elif name == "tanh":
        y = np.tanh(x)
    elif name == "logistic":
        y = 1.0 / (1.0 + np.exp(-x))
    elif name == "identity":
        y = x
    else:
        raise InputError(f"unsupported head activation {name!r}")
    return y


@dataclass
class Head:
    """One label set's head: `kind`, the labels (column order) and the weight arrays."""

    task: str
    kind: str  # cosine | linear | mlp
    labels: list[str]
    weights: list[np.ndarray]
    biases: list[np.ndarray] = field(default_factory=list)
    scale: float = 1.0
    activation: str = "relu"

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(n, len(labels)) logits for embeddings `x`."""
        x = np.asarray(x, dtype=np.float32)
        if self.kind == "cosine":
            w = self.weights[0]
            w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
            xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            return np.asarray(self.scale * xn @ w.T, dtype=np.float32)
        if self.kind == "linear":
            out = x @ self.weights[0].T + self.biases[0]
            if out.shape[1] == 1 and len(self.labels) == 2:  # binary sklearn: one column for labels[1]
                out = np.concatenate([-out, out], axis=1)
            return np.asarray(out, dtype=np.float32)
        if self.kind == "mlp":
            h = x
            for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
                h = h @ w + b
                if i < len(self.weights) - 1:
                    h = _act(self.activation, h)
            if h.shape[1] == 1 and len(self.labels) == 2:
                h = np.concatenate([-h, h], axis=1)
            return np.asarray(h, dtype=np.float32)
        raise InputError(f"unknown head kind {self.kind!r}")

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(n, len(labels)) softmax probabilities for embeddings `x`."""
        s = self.scores(x).astype(np.float64)
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        return np.asarray(p / p.sum(axis=1, keepdims=True))

    def predict(self, x: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Labels and softmax confidences for embeddings `x`."""
        p = self.probabilities(x)
        best = p.argmax(axis=1)
        return [self.labels[i] for i in best], p[np.arange(len(best)), best]

    @classmethod
    def from_sklearn(cls, task: str, est: Any) -> Head | None:
        """A numpy head from a fitted scikit-learn estimator, or None if it has no known form."""
        labels = [str(c) for c in getattr(est, "classes_", [])]
        if hasattr(est, "coefs_") and hasattr(est, "intercepts_"):
            return cls(
                task,
                "mlp",
                labels,
                [np.asarray(w, np.float32) for w in est.coefs_],
                [np.asarray(b, np.float32) for b in est.intercepts_],
                activation=str(est.activation),
            )
        if hasattr(est, "coef_") and hasattr(est, "intercept_") and labels:
            return cls(
                task,
                "linear",
                labels,
                [np.asarray(est.coef_, np.float32)],
                [np.asarray(est.intercept_, np.float32).reshape(-1)],
            )
        return None


def save_heads(path: str | Path, heads: list[Head]) -> Path:
    """Write heads to one .npz (weights as arrays, the rest as a JSON header)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    header = []
    for i, h in enumerate(heads):
        for j, w in enumerate(h.weights):
            arrays[f"h{i}_w{j}"] = w
        for j, b in enumerate(h.biases):
            arrays[f"h{i}_b{j}"] = b
        header.append(
            {
                "task": h.task,
                "kind": h.kind,
                "labels": h.labels,
                "n_weights": len(h.weights),
                "n_biases": len(h.biases),
                "scale": h.scale,
                "activation": h.activation,
            }
        )
    arrays["header"] = np.frombuffer(json.dumps({"format": 1, "heads": header}).encode(), dtype=np.uint8)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)
    return path


def load_heads(path: str | Path) -> dict[str, Head]:
    """Heads by task name from a file written by `save_heads`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such head file")
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(bytes(z["header"]).decode())
        out: dict[str, Head] = {}
        for i, h in enumerate(header["heads"]):
            out[h["task"]] = Head(
                h["task"],
                h["kind"],
                list(h["labels"]),
                [z[f"h{i}_w{j}"] for j in range(h["n_weights"])],
                [z[f"h{i}_b{j}"] for j in range(h["n_biases"])],
                float(h["scale"]),
                h["activation"],
            )
    return out


_CACHE: dict[tuple[str, float], dict[str, Head]] = {}


def cached_heads(path: str) -> dict[str, Head]:
    """`load_heads`, kept while the file is unchanged (the serving path reads it per batch)."""
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        raise InputError(f"{path}: the head this collection version serves is missing") from None
    key = (path, mtime)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = load_heads(path)
    return _CACHE[key]
