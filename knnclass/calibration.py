"""Calibrated confidence: the probability that an answer is right, from its neighbourhood.

A small logistic regression over features of the neighbourhood (vote share, margin to
the runner-up, the winner's similarities, top-1 similarity; a head's probabilities when
a head serves) is fitted on tuning data (leave-one-out or validation) and stored on the
collection version as plain numbers, so serving needs numpy alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Calibration", "auroc", "ece", "fit_calibration", "reliability_bins"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0))))


@dataclass(frozen=True)
class Calibration:
    """Logistic map from standardised features to P(answer right)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    def probability(self, x: np.ndarray) -> np.ndarray:
        """(n,) probabilities for an (n, len(features)) feature matrix."""
        if x.shape[1] != len(self.features):
            raise ValueError(f"calibration expects {len(self.features)} features, got {x.shape[1]}")
        z = (x - np.asarray(self.mean)) / np.asarray(self.std)
        return _sigmoid(z @ np.asarray(self.coef) + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "mean": list(self.mean),
            "std": list(self.std),
            "coef": list(self.coef),
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(
            tuple(d["features"]),
            tuple(float(v) for v in d["mean"]),
            tuple(float(v) for v in d["std"]),
            tuple(float(v) for v in d["coef"]),
            float(d["intercept"]),
        )


def fit_calibration(
    x: np.ndarray, correct: np.ndarray, names: Sequence[str], l2: float = 1e-3, iters: int = 50
) -> Calibration:
    """Fit P(correct | x) by L2-regularised logistic regression (Newton steps)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    if 0 < y.mean() < 1:
        w[-1] = float(np.log(y.mean() / (1 - y.mean())))
    reg = np.full(z.shape[1], l2 * len(x))
    reg[-1] = 0.0

    def loss(w: np.ndarray) -> float:
        m = z @ w
        return float(np.sum(np.logaddexp(0.0, m) - y * m) + 0.5 * np.sum(reg * w * w))

    current = loss(w)
    for _ in range(iters):
        p = _sigmoid(z @ w)
        grad = z.T @ (p - y) + reg * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-4 and loss(w - t * step) > current:  # damped Newton: never climb
            t /= 2
        w = w - t * step
        new = loss(w)
        if current - new < 1e-10 * max(1.0, abs(current)):
            break
        current = new
    return Calibration(
        tuple(names),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        tuple(float(v) for v in w[:-1]),
        float(w[-1]),
    )


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 15
) -> list[tuple[float, float, float, int]]:
    """(bin low, mean confidence, accuracy, count) for equal-width confidence bins that hold rows."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        if m.any():
            out.append((float(edges[b]), float(confidence[m].mean()), float(correct[m].mean()), int(m.sum())))
    return out


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: |accuracy - confidence| per bin, weighted by the bin's share."""
    n = len(confidence)
    if n == 0:
        return 0.0
    return float(sum(c * abs(acc - conf) for _, conf, acc, c in reliability_bins(confidence, correct, bins)) / n)


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `score` for `positive` (ties count one half)."""
    score = np.asarray(score, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    s = score[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
