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
    "FEATURES",
    "Decision",
    "Neighbour",
    "Rule",
    "SizeMode",
    "VoteMode",
    "best_guess",
    "blend",
    "decide",
    "k_for_percent",
    "label_nearest",
    "neighbourhood_features",
    "shares",
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
    """How neighbours become a label: vote mode, neighbourhood size and abstain thresholds.

    `threshold` is the least confidence answered (calibrated where the collection has a
    policy, else the vote share); `novelty` the least familiarity below which a ticket is
    abstained on as unknown (None: never). `blend` is the head's share of the answer where a
    version serves a head: 1 answers with the head alone, less mixes in the vote's shares
    (an ensemble); a collection without a head ignores it.
    """

    vote: VoteMode = "majority"
    size: SizeMode = "k"
    value: float = 3
    threshold: float = 0.0
    novelty: float | None = None
    blend: float = 1.0

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
        if self.novelty is not None and not math.isfinite(self.novelty):
            raise InputError(f"novelty must be a finite number or null, not {self.novelty}")
        if not 0.0 <= self.blend <= 1.0:
            raise InputError(f"blend (the head's share) must be in [0, 1], not {self.blend}")

    def k(self, n_indexed: int) -> int:
        """Neighbours to consult when `n_indexed` examples are stored."""
        if self.size == "k":
            return int(self.value)
        return k_for_percent(self.value, n_indexed)

    def describe(self) -> str:
        size = f"k={int(self.value)}" if self.size == "k" else f"top {self.value:g}%"
        novelty = "" if self.novelty is None else f" novelty<{self.novelty:.4g}"
        blend = "" if self.blend == 1.0 else f" head share={self.blend:.4g}"
        return f"{self.vote} {size} threshold={self.threshold:.4g}{novelty}{blend}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rule:
        return cls(d["vote"], d["size"], d["value"], d.get("threshold", 0.0), d.get("novelty"), d.get("blend", 1.0))

    def with_k(self, k: int | None) -> Rule:
        """The same rule over a fixed `k` neighbours (None: unchanged)."""
        return self if k is None else Rule(self.vote, "k", k, self.threshold, self.novelty)


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


FEATURES = (
    "p1",
    "margin",
    "winner_similarity",
    "top1",
    "top1_agrees",
    "mean_similarity",
    "label_nearest",
    "familiarity",
)
"""What calibration sees of a neighbourhood (see `neighbourhood_features`)."""


def shares(tally: np.ndarray) -> np.ndarray:
    """Each label's share of the vote, (n, n_labels); rows without votes are all zero."""
    total = tally.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, tally / np.where(total > 0, total, 1.0), 0.0)


def best_guess(tally: np.ndarray, codes: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """The label each row's vote leans to, ties broken by summed similarity, then label order."""
    n, n_labels = tally.shape
    codes, scores = codes[:, :k], scores[:, :k]
    valid = codes >= 0
    rows = np.repeat(np.arange(n), codes.shape[1]).reshape(codes.shape)
    wsum = np.zeros((n, n_labels), dtype=np.float64)
    np.add.at(wsum, (rows, np.where(valid, codes, 0)), np.where(valid, np.clip(scores, 0.0, None), 0.0))
    top = tally.max(axis=1, keepdims=True)
    return np.asarray(np.where(tally == top, wsum, -np.inf).argmax(axis=1))


def blend(vote_shares: np.ndarray, head_probs: np.ndarray, weight: float) -> np.ndarray:
    """The ensemble's distribution: `weight` x the head's probabilities + the rest x the vote's shares.

    Rows where nothing voted (all-zero shares) keep the head's probabilities alone."""
    if weight >= 1.0:
        return np.asarray(head_probs, dtype=np.float64)
    voted = vote_shares.sum(axis=1, keepdims=True) > 0
    mixed = weight * head_probs + (1.0 - weight) * vote_shares
    return np.asarray(np.where(voted, mixed, head_probs), dtype=np.float64)


def neighbourhood_features(
    codes: np.ndarray, scores: np.ndarray, k: int, guess: np.ndarray, dist: np.ndarray, typical: np.ndarray
) -> np.ndarray:
    """(n, len(FEATURES)) features of each row's neighbourhood for the answer `guess`.

    dist: (n, n_labels) the answer's distribution (vote shares, or a head's probabilities):
    p1 is the guess's share and margin its lead over the runner-up. The similarity features
    are the winner's mean similarity among the top k, top-1 similarity and whether the top-1
    neighbour agrees, the mean of the top k, and the mean similarity of the two nearest
    neighbours with the guessed label; familiarity is that minus the label's typical value
    (`typical`, per label code), so a ticket is judged against how tight its label usually is.
    """
    n = codes.shape[0]
    idx = np.arange(n)
    c, s = codes[:, :k], scores[:, :k].astype(np.float64)
    valid = c >= 0
    n_valid = np.maximum(valid.sum(axis=1), 1)
    p1 = dist[idx, guess]
    rest = dist.copy()
    rest[idx, guess] = -np.inf
    runner = rest.max(axis=1) if dist.shape[1] > 1 else np.zeros(n)
    margin = p1 - np.where(np.isfinite(runner), runner, 0.0)
    mine = valid & (c == guess[:, None])
    winner_sim = np.where(mine.any(axis=1), (s * mine).sum(axis=1) / np.maximum(mine.sum(axis=1), 1), 0.0)
    top1 = np.where(codes[:, 0] >= 0, scores[:, 0], 0.0)
    agrees = (codes[:, 0] == guess).astype(np.float64)
    mean_sim = (s * valid).sum(axis=1) / n_valid
    near = label_nearest(codes, scores, guess)
    familiarity = near - typical[guess]
    return np.stack([p1, margin, winner_sim, top1, agrees, mean_sim, near, familiarity], axis=1)


def label_nearest(codes: np.ndarray, scores: np.ndarray, label: np.ndarray, m: int = 2) -> np.ndarray:
    """Mean similarity of each row's `m` nearest neighbours labelled `label[row]` (0 where none)."""
    mine = (codes == label[:, None]) & (codes >= 0)
    rank = np.cumsum(mine, axis=1)
    take = mine & (rank <= m)
    return np.asarray((scores * take).sum(axis=1) / np.maximum(take.sum(axis=1), 1))
