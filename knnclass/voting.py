"""Pure vote functions: top-k / top-k% majority or similarity-weighted, ties, abstain.

One vectorised implementation (`vote_batch`) serves both single classification and
tuning, so what tuning scores is exactly what classify does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from .errors import InputError

__all__ = [
    "Decision",
    "Neighbour",
    "Rule",
    "SizeMode",
    "VoteMode",
    "decide",
    "k_for_percent",
    "vote_batch",
]

VoteMode = Literal["majority", "weighted"]
SizeMode = Literal["k", "pct"]


def k_for_percent(percent: float, n_indexed: int) -> int:
    """Neighbours in the nearest `percent` % of `n_indexed` examples; at least 1."""
    if percent <= 0:
        raise InputError("percent must be > 0")
    return max(1, math.ceil(percent / 100.0 * n_indexed - 1e-9))


@dataclass(frozen=True)
class Rule:
    """How neighbours become a label: vote mode, neighbourhood size and abstain threshold."""

    vote: VoteMode = "majority"
    size: SizeMode = "k"
    value: float = 3
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.vote not in ("majority", "weighted"):
            raise InputError(f"vote must be 'majority' or 'weighted', not {self.vote!r}")
        if self.size not in ("k", "pct"):
            raise InputError(f"size must be 'k' or 'pct', not {self.size!r}")
        if self.size == "k" and (self.value < 1 or self.value != int(self.value)):
            raise InputError(f"k must be a whole number >= 1, not {self.value}")
        if self.size == "pct" and not 0 < self.value <= 100:
            raise InputError(f"percent must be in (0, 100], not {self.value}")
        if not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"threshold must be in [0, 1], not {self.threshold}")

    def k(self, n_indexed: int) -> int:
        """Neighbours to consult when `n_indexed` examples are stored."""
        if self.size == "k":
            return int(self.value)
        return k_for_percent(self.value, n_indexed)

    def describe(self) -> str:
        size = f"k={int(self.value)}" if self.size == "k" else f"top {self.value:g}%"
        return f"{self.vote} {size} threshold={self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rule:
        return cls(vote=d["vote"], size=d["size"], value=d["value"], threshold=d.get("threshold", 0.0))


@dataclass(frozen=True)
class Neighbour:
    """A stored example near the query; `score` is cosine similarity."""

    id: str
    label: str
    score: float


@dataclass(frozen=True)
class Decision:
    """The vote's outcome. `label` is None when abstained; `reason` says why."""

    label: str | None
    confidence: float
    abstained: bool
    reason: str | None
    votes: dict[str, float]


def vote_batch(
    codes: np.ndarray, scores: np.ndarray, k: int, vote: VoteMode, n_labels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vote over the first `k` columns of each row.

    codes: (n, m) int label codes, -1 for padding (fewer than m neighbours);
    scores: (n, m) cosine similarities, rows sorted descending.
    Returns (winner code or -1, confidence, tie flag, per-label tally (n, n_labels)).
    Majority ties go to the higher summed similarity; a tie on that too is a tie.
    """
    codes = codes[:, :k]
    scores = scores[:, :k]
    n = codes.shape[0]
    valid = codes >= 0
    safe = np.where(valid, codes, 0)
    rows = np.repeat(np.arange(n), codes.shape[1]).reshape(codes.shape)
    weight = np.where(valid, np.clip(scores, 0.0, None), 0.0).astype(np.float64)
    wsum = np.zeros((n, n_labels), dtype=np.float64)
    np.add.at(wsum, (rows, safe), weight)
    if vote == "majority":
        tally = np.zeros((n, n_labels), dtype=np.float64)
        np.add.at(tally, (rows, safe), valid.astype(np.float64))
        top = tally.max(axis=1, keepdims=True)
        key = np.where(tally == top, wsum, -np.inf)
        total = valid.sum(axis=1).astype(np.float64)
    else:
        tally = wsum
        key = tally
        total = tally.sum(axis=1)
    best = key.argmax(axis=1)
    best_key = key[np.arange(n), best]
    tie = (key == best_key[:, None]).sum(axis=1) > 1
    win = tally[np.arange(n), best]
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(total > 0, win / total, 0.0)
    empty = total <= 0
    winner = np.where(tie | empty, -1, best)
    conf = np.where(tie | empty, np.where(empty, 0.0, conf), conf)
    return winner, conf, tie & ~empty, tally


def decide(neighbours: Sequence[Neighbour], rule: Rule, n_indexed: int) -> Decision:
    """Vote over neighbours (sorted by descending score) with `rule`."""
    k = rule.k(n_indexed)
    labels = sorted({nb.label for nb in neighbours[:k]})
    if not labels:
        return Decision(None, 0.0, True, "no_neighbours", {})
    index = {lab: i for i, lab in enumerate(labels)}
    codes = np.array([[index[nb.label] for nb in neighbours[:k]]], dtype=np.int64)
    scores = np.array([[nb.score for nb in neighbours[:k]]], dtype=np.float64)
    winner, conf, tie, tally = vote_batch(codes, scores, k, rule.vote, len(labels))
    votes = {lab: round(float(tally[0, i]), 6) for lab, i in index.items()}
    c = float(conf[0])
    if tie[0]:
        return Decision(None, c, True, "tie", votes)
    if winner[0] < 0:
        return Decision(None, 0.0, True, "no_neighbours", votes)
    if c < rule.threshold:
        return Decision(None, c, True, "low_confidence", votes)
    return Decision(labels[int(winner[0])], c, False, None, votes)
