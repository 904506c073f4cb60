"""From neighbours (and a head) to a calibrated answer: label, probability, familiarity, reason.

One function, `score_rows`, turns a batch of neighbourhoods into best guesses with
calibrated probabilities and familiarity scores; `reasons` applies a rule's thresholds.
Classify and tuning both use them, so what tuning measures is what serving does.

Familiarity says how much a ticket looks like what is indexed: the mean similarity of its
two nearest neighbours with the guessed label minus what is typical for that label (the
median over the label's stored examples, from their own leave-one-out neighbours), or, where validation held unknown rows, the fitted probability
that a ticket is in scope. Below the rule's `novelty` floor a ticket is abstained on as
`unknown`; below its `threshold` of probability, as `low_confidence`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .calibration import Calibration
from .store.base import Hit
from .voting import FEATURES, Rule, best_guess, label_nearest, neighbourhood_features, shares, vote_batch

ALTERNATIVES = 3
"""How many next labels an answer carries with their probabilities."""

__all__ = [
    "ALTERNATIVES",
    "Policy",
    "Scored",
    "features",
    "guesses",
    "hits_to_arrays",
    "reasons",
    "score_rows",
    "typical_similarity",
]


@dataclass(frozen=True)
class Policy:
    """What a collection version learned at tuning time to calibrate its answers."""

    calibration: Calibration
    typical: dict[str, float]
    default_typical: float
    known: Calibration | None = None
    source: str = "knn"  # "head" when the version serves a head's labels

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration.to_dict(),
            "typical": self.typical,
            "default_typical": self.default_typical,
            "known": self.known.to_dict() if self.known else None,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Policy:
        return cls(
            Calibration.from_dict(d["calibration"]),
            {str(k): float(v) for k, v in d["typical"].items()},
            float(d["default_typical"]),
            Calibration.from_dict(d["known"]) if d.get("known") else None,
            str(d.get("source", "knn")),
        )


@dataclass(frozen=True)
class Scored:
    """A batch of best guesses: codes into `labels`, probabilities and familiarity per row."""

    labels: list[str]
    guess: np.ndarray  # (n,) label code, -1 where nothing voted
    tie: np.ndarray  # (n,) the vote tied (kNN answers only)
    probability: np.ndarray  # (n,) P(guess right): calibrated, or the vote share without a policy
    familiarity: np.ndarray  # (n,) NaN without a policy
    dist: np.ndarray  # (n, len(labels)): the guess's `probability`, the next labels' own (together <= 1)


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


def typical_similarity(labels: Sequence[str], hits: Sequence[Sequence[Hit]]) -> tuple[dict[str, float], float]:
    """Per label, the median `label_nearest` of its stored examples among their own (leave-one-out)
    neighbours; and the overall median, for labels added since."""
    names = sorted({*labels, *(h.label for row in hits for h in row)})
    codes, scores = hits_to_arrays(hits, names, max((len(r) for r in hits), default=1))
    own = np.array([names.index(lab) for lab in labels], dtype=np.int64)
    nearest = label_nearest(codes, scores, own)
    arr = np.asarray(labels)
    per = {str(lab): float(np.median(nearest[arr == lab])) for lab in sorted(set(labels))}
    return per, float(np.median(nearest)) if len(nearest) else 0.0


def guesses(
    codes: np.ndarray, scores: np.ndarray, n_labels: int, rule: Rule, k: int, head_probs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best guess per row (-1: nothing voted), tie flags, the guess's raw share, and the distribution."""
    _winner, conf, tie, tally = vote_batch(codes, scores, k, rule.vote, max(1, n_labels))
    if head_probs is not None:
        dist = head_probs.astype(np.float64)
        guess = dist.argmax(axis=1)
        return guess, np.zeros(len(guess), dtype=bool), dist[np.arange(len(guess)), guess], dist
    guess = np.where(tally.sum(axis=1) > 0, best_guess(tally, codes, scores, k), -1)
    return guess, tie, np.where(guess < 0, 0.0, conf), shares(tally)


def features(
    codes: np.ndarray,
    scores: np.ndarray,
    k: int,
    guess: np.ndarray,
    dist: np.ndarray,
    labels: Sequence[str],
    typical: dict[str, float],
    default_typical: float,
) -> np.ndarray:
    """`neighbourhood_features` with each label's typical similarity looked up (unseen: the overall one)."""
    arr = np.array([typical.get(lab, default_typical) for lab in labels] or [default_typical])
    return neighbourhood_features(codes, scores, k, np.where(guess < 0, 0, guess), dist, arr)


def score_rows(
    codes: np.ndarray,
    scores: np.ndarray,
    labels: list[str],
    rule: Rule,
    k: int,
    policy: Policy | None,
    head_probs: np.ndarray | None = None,
) -> Scored:
    """Guesses, probabilities and familiarity for neighbourhoods (codes into `labels`, best first).

    With `head_probs` ((n, len(labels)), rows summing to 1) the head's labels are the
    guesses and the neighbours calibrate and evidence them.
    """
    guess, tie, raw, dist = guesses(codes, scores, len(labels), rule, k, head_probs)
    if policy is None:
        return Scored(labels, guess, tie, raw, np.full(len(guess), np.nan), dist)
    x = features(codes, scores, k, guess, dist, labels, policy.typical, policy.default_typical)
    empty = guess < 0
    prob = np.where(empty, 0.0, policy.calibration.probability(x))
    fam = policy.known.probability(x) if policy.known is not None else x[:, FEATURES.index("familiarity")]
    fam = np.where(empty, -np.inf, fam)
    # the next labels: each calibrated as if it were the answer (its own share, margin and
    # similarities), scaled down together where they and the guess would sum past one
    rows = np.arange(len(guess))
    safe = np.where(empty, 0, guess)
    out = np.zeros_like(dist)
    rest = dist.copy()
    rest[rows, safe] = -1.0
    alts = np.argsort(-rest, axis=1, kind="stable")[:, :ALTERNATIVES]
    for j in range(alts.shape[1]):
        alt = alts[:, j]
        named = rest[rows, alt] > 0
        xa = features(codes, scores, k, alt, dist, labels, policy.typical, policy.default_typical)
        out[rows, alt] = np.where(named & ~empty, policy.calibration.probability(xa), 0.0)
    total = out.sum(axis=1)
    room = 1.0 - prob
    out *= np.where(total > room, room / np.where(total > 0, total, 1.0), 1.0)[:, None]
    out[rows, safe] = prob
    return Scored(labels, guess, tie, prob, fam, out)


def reasons(sc: Scored, rule: Rule) -> list[str | None]:
    """Why each row is abstained on (None: answered): no_neighbours, unknown, tie, low_confidence."""
    out: list[str | None] = []
    for g, t, p, f in zip(sc.guess, sc.tie, sc.probability, sc.familiarity, strict=True):
        if g < 0:
            out.append("no_neighbours")
        elif rule.novelty is not None and f < rule.novelty:  # NaN (no policy) never is
            out.append("unknown")
        elif t:
            out.append("tie")
        elif p < rule.threshold:
            out.append("low_confidence")
        else:
            out.append(None)
    return out
