"""Choose the vote rule by validation: every (vote, size, threshold) candidate is scored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import score_predictions
from .store.base import Hit
from .voting import Rule, k_for_percent, vote_batch

__all__ = ["K_GRID", "K_MAX", "PCT_GRID", "Candidate", "TuningResult", "hits_to_arrays", "tune_rule"]

K_GRID = (1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50)
PCT_GRID = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
K_MAX = 256


@dataclass(frozen=True)
class Candidate:
    """One scored rule; `score` is what tuning maximises (accuracy, abstentions included)."""

    rule: Rule
    k: int
    score: float
    macro_f1: float
    abstain_rate: float
    unknown_recall: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {**self.rule.to_dict(), "k": self.k, "score": self.score, "macro_f1": self.macro_f1}
        d["abstain_rate"] = self.abstain_rate
        if self.unknown_recall is not None:
            d["unknown_recall"] = self.unknown_recall
        return d


@dataclass(frozen=True)
class TuningResult:
    best: Candidate
    candidates: list[Candidate]
    mode: str
    n: int

    def summary(self) -> dict[str, Any]:
        return {"mode": self.mode, "n": self.n, "best": self.best.to_dict()}


def hits_to_arrays(hits: Sequence[Sequence[Hit]], labels: list[str], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Label codes (-1 pads) and scores, (n, width), from search results."""
    index = {lab: i for i, lab in enumerate(labels)}
    codes = np.full((len(hits), width), -1, dtype=np.int64)
    scores = np.zeros((len(hits), width), dtype=np.float64)
    for i, row in enumerate(hits):
        for j, h in enumerate(row[:width]):
            codes[i, j] = index[h.label]
            scores[i, j] = h.score
    return codes, scores


def _size_grid(n_indexed: int) -> list[tuple[str, float, int]]:
    grid: list[tuple[str, float, int]] = [("k", float(k), k) for k in K_GRID if k <= max(1, n_indexed)]
    for p in PCT_GRID:
        k = k_for_percent(p, n_indexed)
        if k <= min(K_MAX, n_indexed):
            grid.append(("pct", p, k))
    return grid


def tune_rule(
    truth: Sequence[str],
    hits: Sequence[Sequence[Hit]],
    n_indexed: int,
    unknown_label: str | None = None,
    mode: str = "validation",
) -> TuningResult:
    """Score every candidate rule on (truth, neighbours) pairs and pick the best.

    Ties in score go to higher macro-F1, then the smaller neighbourhood, then majority
    over weighted: the simplest rule that is as good.
    """
    labels = sorted({h.label for row in hits for h in row})
    width = max((len(r) for r in hits), default=0)
    codes, scores = hits_to_arrays(hits, labels, width)
    candidates: list[Candidate] = []
    for size, value, k in _size_grid(n_indexed):
        for vote in ("majority", "weighted"):
            winner, conf, _tie, _ = vote_batch(codes, scores, k, vote, max(1, len(labels)))
            base = [labels[w] if w >= 0 else None for w in winner]
            thresholds = [0.0]
            if unknown_label is not None:
                qs = np.unique(np.round(np.quantile(conf, np.linspace(0.0, 0.6, 25)), 4))
                thresholds = sorted({0.0, *(float(q) for q in qs if 0 < q <= 1)})
            for th in thresholds:
                pred = [p if c >= th else None for p, c in zip(base, conf, strict=True)] if th > 0 else base
                m = score_predictions(truth, pred, unknown_label)
                rule = Rule(vote=vote, size=size, value=value, threshold=th)  # type: ignore[arg-type]
                candidates.append(
                    Candidate(rule, k, m["accuracy"], m["macro_f1"], m["abstain_rate"], m.get("unknown_recall"))
                )
    if not candidates:
        raise ValueError("nothing to tune: no examples")
    best = max(
        candidates,
        key=lambda c: (
            round(c.score, 9),
            round(c.macro_f1, 9),
            -c.k,
            c.rule.vote == "majority",
            c.rule.size == "k",
            -c.rule.threshold,
        ),
    )
    return TuningResult(best, candidates, mode, len(truth))
