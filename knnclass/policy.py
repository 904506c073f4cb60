"""From neighbours (and a head) to a calibrated answer: label, probability, familiarity, reason.

One function, `score_rows`, turns a batch of neighbourhoods into best guesses with
calibrated probabilities and familiarity scores; `reasons` applies a rule's thresholds.
Classify and tuning both use them, so what tuning measures is what serving does.

Familiarity says how much a ticket looks like what is indexed: the mean similarity of its
two nearest neighbours with the guessed label minus what is typical for that label (the
median over the label's stored examples, from their own leave-one-out neighbours), or, where validation held unknown rows, the fitted probability
that a ticket is in scope. Below the rule's `novelty` floor a ticket is abstained on as
`unknown`; below its `threshold` of probability, as `low_confidence`.

Where validation held unknown rows the policy also holds a `Novelty` model (fitted from the
stored vectors at tune time) and P(in scope) sees two more features: the query vector's
Mahalanobis distance to the nearest class mean and to the overall mean, under shrunk
covariances in the top principal directions of the stored vectors (see `Novelty`).
P(answer right) keeps the neighbourhood features alone (the distances made it no better
calibrated on a train-only split).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .calibration import Calibration
from .store.base import Hit
from .voting import FEATURES, Rule, best_guess, blend, label_nearest, neighbourhood_features, shares, vote_batch

ALTERNATIVES = 3
"""How many next labels an answer carries with their probabilities."""

NOVELTY_FEATURES = ("class_distance", "global_distance")
"""The `Novelty` model's features (log(1 + squared distance)), after `FEATURES` in P(in scope)."""

NOVELTY_RANK = 32
"""Principal directions a `Novelty` model keeps (fewer when the vectors have fewer dimensions)."""

NOVELTY_SHRINK = 0.1
"""Weight of the isotropic target in the shrunk covariances. Rank, shrinkage and the log were
chosen on open-set splits of Banking77's train set alone (seeds 1-5), never its test set."""

__all__ = [
    "ALTERNATIVES",
    "NOVELTY_FEATURES",
    "NOVELTY_RANK",
    "NOVELTY_SHRINK",
    "Novelty",
    "Policy",
    "Scored",
    "features",
    "fit_novelty",
    "guesses",
    "head_columns",
    "hits_to_arrays",
    "in_scope",
    "novelty_features",
    "reasons",
    "score_rows",
    "typical_similarity",
]


def _encode(a: np.ndarray, dtype: str) -> dict[str, Any]:
    arr = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"dtype": dtype, "shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode("ascii")}


def _decode(d: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(d["data"])
    arr = np.frombuffer(raw, dtype=np.dtype(str(d["dtype"])).newbyteorder("<")).reshape(d["shape"])
    return arr.astype(np.float64)


@dataclass(frozen=True, eq=False)
class Novelty:
    """How far a vector lies from the stored examples: Mahalanobis distances, low rank.

    `basis` (d, r) holds the top r principal directions of the stored vectors; within them the
    within-class covariance is diagonal (`within`: its shrunk variances) and `total` is the
    Cholesky factor of the shrunk precision of all vectors; outside them one variance per
    dimension each (`residual`: within-class, total; 0 where the basis spans everything).
    `class_distance` is the squared distance to the nearest class mean (`means`, in the
    basis), `global_distance` to the overall `center`. Stored as float16 / float32 base64
    (about 43 kB for 384 dimensions and 77 labels at r = 32).
    """

    labels: tuple[str, ...]
    counts: np.ndarray  # (C,) stored examples per label
    center: np.ndarray  # (d,)
    basis: np.ndarray  # (d, r)
    within: np.ndarray  # (r,) within-class variances along the basis, shrunk
    total: np.ndarray  # (r, r) whitening factor of all vectors' covariance in the basis, shrunk
    means: np.ndarray  # (C, r) class means minus center, in the basis
    residual: tuple[float, float]
    digest: str = field(default="")

    @property
    def dim(self) -> int:
        return int(self.center.shape[0])

    def features(self, vectors: np.ndarray) -> np.ndarray:
        """(n, 2): `NOVELTY_FEATURES` for each vector."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"novelty expects vectors of dimension {self.dim}, got shape {x.shape}")
        diff = x - self.center
        p = diff @ self.basis
        outside = np.maximum((diff * diff).sum(axis=1) - (p * p).sum(axis=1), 0.0)
        scale = 1.0 / np.sqrt(self.within)
        w = p * scale
        m = self.means * scale
        d2 = np.maximum((w * w).sum(axis=1)[:, None] - 2.0 * (w @ m.T) + (m * m).sum(axis=1)[None, :], 0.0)
        sw, st = self.residual
        cls = d2.min(axis=1) if d2.shape[1] else np.zeros(len(x))
        glob = ((p @ self.total) ** 2).sum(axis=1)
        if sw > 0:
            cls = cls + outside / sw
        if st > 0:
            glob = glob + outside / st
        out = np.stack([cls, glob], axis=1)
        logs: np.ndarray = np.log1p(out)  # squared distances have a long tail; their logs suit the logistic map
        return logs

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "counts": [int(c) for c in self.counts],
            "residual": [float(v) for v in self.residual],
            "center": _encode(self.center, "float32"),
            "basis": _encode(self.basis, "float16"),
            "within": _encode(self.within, "float32"),
            "total": _encode(self.total, "float32"),
            "means": _encode(self.means, "float16"),
            "digest": self.digest,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Novelty:
        key = str(d.get("digest") or "")
        if key:
            with _CACHE_LOCK:
                hit = _NOVELTY_CACHE.get(key)
            if hit is not None:
                return hit
        out = cls(
            tuple(str(v) for v in d["labels"]),
            np.asarray(d["counts"], dtype=np.float64),
            _decode(d["center"]),
            _decode(d["basis"]),
            _decode(d["within"]),
            _decode(d["total"]),
            _decode(d["means"]),
            (float(d["residual"][0]), float(d["residual"][1])),
            key,
        )
        if key:
            with _CACHE_LOCK:
                _NOVELTY_CACHE[key] = out
                while len(_NOVELTY_CACHE) > 16:
                    _NOVELTY_CACHE.pop(next(iter(_NOVELTY_CACHE)))
        return out


_NOVELTY_CACHE: dict[str, Novelty] = {}  # digest -> decoded model: meta.json is read per request
_CACHE_LOCK = threading.Lock()


def fit_novelty(
    vectors: np.ndarray, labels: Sequence[str], rank: int = NOVELTY_RANK, shrink: float = NOVELTY_SHRINK
) -> Novelty | None:
    """The `Novelty` model of stored examples (None with fewer than 3 of them).

    Covariances are shrunk towards their mean variance, (1 - shrink) S + shrink tr(S)/d I.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3 or len(x) != len(labels):
        return None
    n, dim = x.shape
    names = sorted({str(lab) for lab in labels})
    codes = np.searchsorted(np.array(names, dtype=object), np.array([str(lab) for lab in labels], dtype=object))
    counts = np.bincount(codes, minlength=len(names)).astype(np.float64)
    center = x.mean(axis=0)
    class_means = np.zeros((len(names), dim))
    np.add.at(class_means, codes, x)
    class_means /= counts[:, None]
    diff = x - center
    total_cov = diff.T @ diff / n
    gap = class_means - center
    within_cov = total_cov - (gap * counts[:, None]).T @ gap / n  # total minus between-class scatter
    r = max(1, min(rank, dim))
    _, vecs = np.linalg.eigh(total_cov)
    basis = vecs[:, ::-1][:, :r]
    floor = 1e-9 * max(float(np.trace(total_cov)) / dim, 1e-12)
    tw, tt = float(np.trace(within_cov)) / dim + floor, float(np.trace(total_cov)) / dim + floor
    lam, rot = np.linalg.eigh((1 - shrink) * (basis.T @ within_cov @ basis) + shrink * tw * np.eye(r))
    basis = basis @ rot  # the same span, turned so the within-class covariance is diagonal in it
    within = np.maximum(lam, floor)
    t_in = (1 - shrink) * (basis.T @ total_cov @ basis) + shrink * tt * np.eye(r)
    total = np.linalg.cholesky(np.linalg.inv(t_in + floor * np.eye(r)))
    residual = (0.0, 0.0)
    if dim > r:
        sw = (1 - shrink) * (np.trace(within_cov) - np.trace(basis.T @ within_cov @ basis)) / (dim - r) + shrink * tw
        st = (1 - shrink) * (np.trace(total_cov) - np.trace(basis.T @ total_cov @ basis)) / (dim - r) + shrink * tt
        residual = (max(float(sw), floor), max(float(st), floor))
    model = Novelty(tuple(names), counts, center, basis, within, total, gap @ basis, residual)
    # round through the stored form, so tuning scores exactly what serving computes
    d = model.to_dict()
    d["digest"] = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:24]
    return Novelty.from_dict(d)


@dataclass(frozen=True)
class Policy:
    """What a collection version learned at tuning time to calibrate its answers."""

    calibration: Calibration
    typical: dict[str, float]
    default_typical: float
    known: Calibration | None = None
    source: str = "knn"  # "head" when the version serves a head's labels
    novelty: Novelty | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration.to_dict(),
            "typical": self.typical,
            "default_typical": self.default_typical,
            "known": self.known.to_dict() if self.known else None,
            "source": self.source,
            "novelty": self.novelty.to_dict() if self.novelty else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Policy:
        return cls(
            Calibration.from_dict(d["calibration"]),
            {str(k): float(v) for k, v in d["typical"].items()},
            float(d["default_typical"]),
            Calibration.from_dict(d["known"]) if d.get("known") else None,
            str(d.get("source", "knn")),
            Novelty.from_dict(d["novelty"]) if d.get("novelty") else None,
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


def head_columns(head_labels: Sequence[str], probs: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """A head's probabilities `probs` (columns `head_labels`) in the columns of `labels`; labels it lacks: zero."""
    index = {lab: i for i, lab in enumerate(labels)}
    out = np.zeros((len(probs), len(labels)))
    out[:, [index[lab] for lab in head_labels]] = probs
    return out


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
    if head_probs is not None:  # the head's answer, or (rule.blend < 1) the ensemble's
        dist = blend(shares(tally), head_probs, rule.blend)
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


def novelty_features(policy: Policy | None, vectors: np.ndarray | None) -> np.ndarray | None:
    """The policy's `Novelty` features of the query vectors (None where it has no such model)."""
    if policy is None or policy.novelty is None:
        return None
    if vectors is None:
        raise ValueError("this collection's calibration needs the query vectors (its policy has a novelty model)")
    return policy.novelty.features(vectors)


def in_scope(policy: Policy, x: np.ndarray, extra: np.ndarray | None) -> np.ndarray:
    """P(in scope) from the policy's `known` calibration: the neighbourhood features `x`, then the
    novelty ones where it was fitted with them."""
    assert policy.known is not None
    if extra is not None and tuple(policy.known.features[-len(NOVELTY_FEATURES) :]) == NOVELTY_FEATURES:
        x = np.hstack([x, extra])
    return policy.known.probability(x)


def score_rows(
    codes: np.ndarray,
    scores: np.ndarray,
    labels: list[str],
    rule: Rule,
    k: int,
    policy: Policy | None,
    head_probs: np.ndarray | None = None,
    vectors: np.ndarray | None = None,
) -> Scored:
    """Guesses, probabilities and familiarity for neighbourhoods (codes into `labels`, best first).

    With `head_probs` ((n, len(labels)), rows summing to 1) the head's labels are the
    guesses and the neighbours calibrate and evidence them. `vectors` (n, dim): the query
    vectors, needed where the policy has a `Novelty` model.
    """
    guess, tie, raw, dist = guesses(codes, scores, len(labels), rule, k, head_probs)
    if policy is None:
        return Scored(labels, guess, tie, raw, np.full(len(guess), np.nan), dist)
    x = features(codes, scores, k, guess, dist, labels, policy.typical, policy.default_typical)
    empty = guess < 0
    prob = np.where(empty, 0.0, policy.calibration.probability(x))
    if policy.known is not None:
        fam = in_scope(policy, x, novelty_features(policy, vectors))
    else:
        fam = x[:, FEATURES.index("familiarity")]
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
