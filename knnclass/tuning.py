"""Choose the vote rule, calibrate it and pick the operating point, all by validation.

1. Every (vote, size) candidate is scored by the accuracy of its best guesses on the
   in-scope rows; ties go to the simplest rule. Where a head serves, its share of the
   answer (blended with the chosen vote's shares) is picked the same way.
2. For the chosen one a `Policy` is fitted: calibrated P(answer right) on in-scope rows and,
   where validation holds unknown rows, P(in scope).
3. The abstain thresholds (probability and familiarity) are set by the `Objective`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from .calibration import fit_calibration
from .errors import InputError
from .metrics import score_predictions
from .policy import (
    NOVELTY_FEATURES,
    Novelty,
    Policy,
    Scored,
    features,
    guesses,
    head_columns,
    hits_to_arrays,
    score_rows,
)
from .store.base import Hit
from .voting import FEATURES, Rule, k_for_percent, vote_batch

__all__ = [
    "BLENDS",
    "DEFAULT_UNKNOWN_RECALL",
    "K_GRID",
    "K_MAX",
    "LOO_ROWS",
    "PCT_GRID",
    "Candidate",
    "Objective",
    "TuningResult",
    "hits_to_arrays",
    "tune_rule",
    "wilson_lower",
]

K_GRID = (1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50)
PCT_GRID = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
K_MAX = 256
LOO_ROWS = 20_000
"""Leave-one-out tuning scores at most this many stored examples: the first in scroll order,
which is by hashed id (a fixed pseudo-random sample), so re-tuning a big collection stays minutes."""
DEFAULT_UNKNOWN_RECALL = 0.75
"""The default objective's floor on unknown recall (with unknown rows in validation): three in four caught."""
BLENDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""The head's shares an ensemble rule is tried with (1.0 is the head alone)."""


@dataclass(frozen=True)
class Objective:
    """Where to put the operating point.

    By default, with unknown rows in validation: unknown recall reaches `DEFAULT_UNKNOWN_RECALL`
    (as a target: its `confidence` lower bound does), in-scope accuracy maximised. A fixed
    recall floor keeps the decision predictable: a weighted objective lands wherever the
    trade-off curve's slope matches the weight, which moves with the data. Where validation
    holds too few unknown rows to show that floor, or with `unknown_weight` w given: maximise
    in-scope accuracy x (1 - w) + unknown recall x w (w 0.5 there: balanced accuracy over the
    two groups). Either way a small share of unknown rows cannot be ignored. Without unknown
    rows: the most accurate point, with the novelty floor at the familiarity that
    `unknown_rate` of in-scope rows fall below.
    `target_accuracy`: answered tickets reach it, coverage maximised.
    `target_unknown_recall`: unknown rows abstained on at least that often, in-scope
    accuracy maximised (needs unknown rows).
    A target is reached where the one-sided `confidence` lower bound (Wilson score) of the
    validation figure reaches it, not the figure alone: the point that only just reaches a
    target on validation falls short on fresh tickets about half the time (0.5: the figure).
    """

    target_accuracy: float | None = None
    target_unknown_recall: float | None = None
    unknown_weight: float | None = None
    unknown_rate: float = 0.01
    confidence: float = 0.9

    def __post_init__(self) -> None:
        if self.target_accuracy is not None and self.target_unknown_recall is not None:
            raise InputError("give at most one of target accuracy and target unknown recall")
        for name in ("target_accuracy", "target_unknown_recall"):
            v = getattr(self, name)
            if v is not None and not 0 < v <= 1:
                raise InputError(f"{name.replace('_', ' ')} must be in (0, 1], not {v}")
        if self.unknown_weight is not None and not 0 < self.unknown_weight < 1:
            raise InputError(f"unknown weight must be in (0, 1), not {self.unknown_weight}")
        if not 0 <= self.unknown_rate < 1:
            raise InputError(f"unknown rate must be in [0, 1), not {self.unknown_rate}")
        if not 0.5 <= self.confidence < 1:
            raise InputError(f"target confidence must be in [0.5, 1), not {self.confidence}")

    def describe(self, has_unknown: bool = True) -> str:
        bound = f"'s {100 * self.confidence:g} % lower bound" if self.confidence > 0.5 else ""
        if self.target_accuracy is not None:
            return f"answered accuracy{bound} >= {self.target_accuracy:g}, coverage maximised"
        if self.target_unknown_recall is not None:
            return f"unknown recall{bound} >= {self.target_unknown_recall:g}, in-scope accuracy maximised"
        if not has_unknown:
            floor = (
                f"novelty floor flagging {100 * self.unknown_rate:g} % of in-scope rows"
                if self.unknown_rate
                else "no novelty floor"
            )
            return f"most accurate point, {floor}"
        if self.unknown_weight is None:
            return replace(self, target_unknown_recall=DEFAULT_UNKNOWN_RECALL).describe() + " (the default)"
        w = self.unknown_weight
        return f"{1 - w:g} x in-scope accuracy + {w:g} x unknown recall" + (" (balanced)" if w == 0.5 else "")

    def plans(self, has_unknown: bool) -> list[Objective]:
        """The objectives `tune_rule` tries in turn, keeping the first whose target is met:
        the default's recall floor, then its balanced fallback."""
        if not has_unknown or self.unknown_weight is not None or self.targeted:
            return [self]
        return [replace(self, target_unknown_recall=DEFAULT_UNKNOWN_RECALL), replace(self, unknown_weight=0.5)]

    @property
    def targeted(self) -> bool:
        return self.target_accuracy is not None or self.target_unknown_recall is not None


@dataclass(frozen=True)
class Candidate:
    """One scored rule; `score` is the accuracy of its best guesses on in-scope rows."""

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
    policy: Policy | None = None
    point: dict[str, Any] = field(default_factory=dict)
    tradeoff: list[dict[str, Any]] = field(default_factory=list)
    blends: dict[float, float] = field(default_factory=dict)  # head share -> accuracy, where a head was tuned

    def summary(self) -> dict[str, Any]:
        out = {"mode": self.mode, "n": self.n, "best": self.best.to_dict(), "point": self.point}
        if self.blends:
            out["blends"] = {f"{w:g}": round(a, 5) for w, a in self.blends.items()}
        return out


def _size_grid(n_indexed: int) -> list[tuple[str, float, int]]:
    grid: list[tuple[str, float, int]] = [("k", float(k), k) for k in K_GRID if k <= max(1, n_indexed)]
    for p in PCT_GRID:
        k = k_for_percent(p, n_indexed)
        if k <= min(K_MAX, n_indexed):
            grid.append(("pct", p, k))
    return grid


def _curve(sc: Scored, eligible: np.ndarray, correct: np.ndarray, unknown: np.ndarray) -> dict[str, np.ndarray]:
    """Every probability threshold at once: answering the eligible rows from the most probable down."""
    idx = np.where(eligible)[0]
    order = idx[np.argsort(-sc.probability[idx], kind="stable")]
    p = sc.probability[order]
    cut = np.r_[p[1:] != p[:-1], True] if len(p) else np.zeros(0, dtype=bool)
    answered = np.r_[0, np.arange(1, len(p) + 1)[cut]]
    right = np.r_[0, np.cumsum(correct[order])[cut]]
    wrong_unknown = np.r_[0, np.cumsum(unknown[order])[cut]]
    threshold = np.r_[1.0, p[cut]]
    if len(threshold) > 1:
        threshold[-1] = 0.0  # answering every eligible row: no probability floor
    n, n_unknown = len(correct), int(unknown.sum())
    n_known = n - n_unknown
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "threshold": threshold,
            "coverage": answered / max(n, 1),
            "answered_accuracy": np.where(answered > 0, right / np.maximum(answered, 1), 1.0),
            "in_scope_accuracy": right / max(n_known, 1),
            "unknown_recall": 1.0 - wrong_unknown / max(n_unknown, 1) if n_unknown else np.full(len(answered), np.nan),
            "n_answered": answered.astype(np.float64),
            "n_right": right.astype(np.float64),
        }
    if n_unknown:
        out["n_unknown"] = np.full(len(answered), float(n_unknown))
        out["n_unknown_caught"] = (n_unknown - wrong_unknown).astype(np.float64)
    return out


def wilson_lower(successes: np.ndarray, trials: np.ndarray | int, confidence: float) -> np.ndarray:
    """One-sided `confidence` lower bound (Wilson score) of a proportion; 0 where there are no
    trials, the proportion itself at confidence 0.5."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.broadcast_to(np.asarray(trials, dtype=np.float64), k.shape)
    z = NormalDist().inv_cdf(confidence)
    safe = np.maximum(n, 1.0)
    p = k / safe
    centre = p + z * z / (2 * safe)
    spread = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe))
    return np.asarray(np.where(n > 0, (centre - spread) / (1 + z * z / safe), 0.0))


_COUNTS = {"answered_accuracy": ("n_right", "n_answered"), "unknown_recall": ("n_unknown_caught", "n_unknown")}
"""The curve's counts behind each proportion a target can be set on: (successes, trials)."""


def _constrained(
    curve: dict[str, np.ndarray], key: str, target: float, maximise: str, confidence: float = 0.5
) -> tuple[int, float, bool]:
    """The point maximising `maximise` among those whose `key` reaches `target` (its `confidence`
    lower bound does, see `wilson_lower`); else the highest `key`."""
    successes, trials = _COUNTS[key]
    low = wilson_lower(curve[successes], curve[trials], confidence)
    ok = low >= target - 1e-12
    if ok.any():
        value = np.where(ok, curve[maximise], -1.0)
        i = int(np.argmax(value))
        return i, float(value[i]), True
    i = int(np.nanargmax(curve[key]))
    return i, float(curve[maximise][i]), False


def _choose(curve: dict[str, np.ndarray], objective: Objective, has_unknown: bool) -> tuple[int, float, bool]:
    """Index of the chosen point on `curve`, its objective value, and whether a target was met."""
    if objective.target_accuracy is not None:
        return _constrained(curve, "answered_accuracy", objective.target_accuracy, "coverage", objective.confidence)
    if objective.target_unknown_recall is not None:
        return _constrained(
            curve, "unknown_recall", objective.target_unknown_recall, "in_scope_accuracy", objective.confidence
        )
    if has_unknown:
        w = 0.5 if objective.unknown_weight is None else objective.unknown_weight
        value = (1 - w) * curve["in_scope_accuracy"] + w * curve["unknown_recall"]
    else:
        value = curve["in_scope_accuracy"]
    i = int(len(value) - 1 - np.argmax(value[::-1]))  # among equals, the lowest threshold
    return i, float(value[i]), True


def _pick(curves: list[dict[str, np.ndarray]], objective: Objective, has_unknown: bool) -> tuple[bool, float, int, int]:
    """(target met, objective value, curve index, point index) of the best point over `curves`
    (one per novelty floor); among equals, the first curve's."""
    best = (False, -np.inf, 0, 0)
    for j, curve in enumerate(curves):
        i, value, met = _choose(curve, objective, has_unknown)
        if j == 0 or (met, value) > best[:2]:
            best = (met, value, j, i)
    return best


def _point(curve: dict[str, np.ndarray], i: int, novelty: float | None) -> dict[str, Any]:
    d: dict[str, Any] = {
        k: int(v[i]) if k.startswith("n_") else float(v[i]) for k, v in curve.items() if not np.isnan(v[i])
    }
    d["novelty"] = novelty
    return d


def tune_rule(
    truth: Sequence[str],
    hits: Sequence[Sequence[Hit]],
    n_indexed: int,
    unknown_label: str | None = None,
    mode: str = "validation",
    typical: tuple[dict[str, float], float] | None = None,
    objective: Objective | None = None,
    head: tuple[list[str], np.ndarray] | None = None,
    novelty: Novelty | None = None,
    vectors: np.ndarray | None = None,
    blends: Sequence[float] = (1.0,),
) -> TuningResult:
    """Score every candidate rule on (truth, neighbours) pairs and pick the best.

    Ties in score go to higher macro-F1, then the smaller neighbourhood, then majority
    over weighted: the simplest rule that is as good. With `typical` (per-label typical
    top-3 similarity, and overall) a calibration policy is fitted and the thresholds set by
    `objective`; `head` = (labels, probabilities per row) calibrates a head's answers, blended
    with the chosen vote's shares at the head share of `blends` that validation scores best.
    With `novelty` (fitted on the stored vectors) and `vectors` (the rows' own vectors) its
    distances join the features of P(in scope), where unknown rows exist to fit it.
    """
    if novelty is not None and (vectors is None or len(vectors) != len(truth)):
        raise ValueError("a novelty model needs one vector per tuning row")
    objective = objective or Objective()
    labels = sorted({h.label for row in hits for h in row} | set(head[0] if head else ()))
    width = max((len(r) for r in hits), default=0)
    codes, scores = hits_to_arrays(hits, labels, width)
    truth_arr = np.asarray(truth, dtype=object)
    unknown = truth_arr == unknown_label if unknown_label is not None else np.zeros(len(truth), dtype=bool)
    known = ~unknown
    if not known.any():
        raise InputError("nothing to tune: no in-scope rows")
    head_probs = None
    if head is not None:
        head_probs = head_columns(head[0], head[1], labels)
    candidates: list[Candidate] = []
    for size, value, k in _size_grid(n_indexed):
        for vote in ("majority", "weighted"):
            winner, _conf, _tie, _ = vote_batch(codes, scores, k, vote, max(1, len(labels)))
            pred = [labels[w] if w >= 0 else None for w in winner]
            m = score_predictions(
                [t for t, u in zip(truth, unknown, strict=True) if not u],
                [p for p, u in zip(pred, unknown, strict=True) if not u],
            )
            rule = Rule(vote=vote, size=size, value=value)  # type: ignore[arg-type]
            candidates.append(Candidate(rule, k, m["accuracy"], m["macro_f1"], m["abstain_rate"]))
    if not candidates:
        raise InputError("nothing to tune: no examples")
    best = max(
        candidates,
        key=lambda c: (round(c.score, 9), round(c.macro_f1, 9), -c.k, c.rule.vote == "majority", c.rule.size == "k"),
    )
    scored: dict[float, float] = {}
    if head_probs is not None:
        best, scored = _choose_blend(codes, scores, labels, best, head_probs, truth_arr, known, blends)
    if typical is None:
        return TuningResult(best, candidates, mode, len(truth), blends=scored)
    extra = (novelty, np.asarray(vectors)) if novelty is not None and unknown.any() else None
    policy, sc = _fit_policy(codes, scores, labels, best, truth_arr, unknown, typical, head_probs, extra)
    eligible = (sc.guess >= 0) & ~sc.tie
    guess = np.array([labels[g] if g >= 0 else None for g in sc.guess], dtype=object)
    correct = (guess == truth_arr) & known
    fam_known = sc.familiarity[known & eligible]
    has_unknown = bool(unknown.any())
    if has_unknown:
        qs = np.quantile(fam_known, [0, 0.001, 0.002, 0.005, *np.linspace(0.01, 0.6, 60)]) if len(fam_known) else []
        floors: list[float | None] = [None, *sorted({float(q) for q in qs})]
    else:
        floors = [float(np.quantile(fam_known, objective.unknown_rate))] if objective.unknown_rate > 0 else [None]
    if objective.target_unknown_recall is not None and not has_unknown:
        raise InputError("a target unknown recall needs validation rows labelled with the --unknown-label")
    curves = [_curve(sc, eligible if f is None else eligible & (sc.familiarity >= f), correct, unknown) for f in floors]
    for plan in objective.plans(has_unknown):
        met, value, j, i = _pick(curves, plan, has_unknown)
        if met:
            break
    floor, curve = floors[j], curves[j]
    rule = replace(best.rule, threshold=float(curve["threshold"][i]), novelty=floor)
    described = plan.describe(has_unknown)
    if plan is not objective:  # the default, with unknown rows
        described += " (the default)" if plan.targeted else " (the default, where too few unknown rows show its floor)"
    point = {**_point(curve, i, floor), "objective": described, "target_met": met}
    final = Candidate(
        rule, best.k, best.score, best.macro_f1, 1.0 - float(curve["coverage"][i]), point.get("unknown_recall")
    )
    lo, hi = float(curve["coverage"][i]) - 0.15, float(curve["coverage"][i]) + 0.15
    near = [j for j in range(len(curve["coverage"])) if lo <= curve["coverage"][j] <= hi]
    step = max(1, len(near) // 8)
    rows = sorted({*near[::step], i})
    tradeoff = [{**_point(curve, j, floor), "chosen": j == i} for j in rows]
    return TuningResult(final, candidates, mode, len(truth), policy, point, tradeoff, scored)


def _choose_blend(
    codes: np.ndarray,
    scores: np.ndarray,
    labels: list[str],
    best: Candidate,
    head_probs: np.ndarray,
    truth: np.ndarray,
    known: np.ndarray,
    blends: Sequence[float],
) -> tuple[Candidate, dict[float, float]]:
    """The head share (of `blends`) whose answers are most accurate on the in-scope rows; the
    candidate re-scored as served (ties: the larger share). Returns it and every share's accuracy."""
    if not blends:
        raise ValueError("no head share to try")
    results: dict[float, tuple[float, float]] = {}
    for w in blends:
        guess, *_ = guesses(codes, scores, len(labels), replace(best.rule, blend=float(w)), best.k, head_probs)
        m = score_predictions(list(truth[known]), [labels[g] for g in guess[known]])
        results[float(w)] = (float(m["accuracy"]), float(m["macro_f1"]))
    w = max(results, key=lambda v: (round(results[v][0], 9), round(results[v][1], 9), v))
    acc, f1 = results[w]
    chosen = replace(best, rule=replace(best.rule, blend=w), score=acc, macro_f1=f1)
    return chosen, {v: a for v, (a, _f) in results.items()}


def _fit_policy(
    codes: np.ndarray,
    scores: np.ndarray,
    labels: list[str],
    best: Candidate,
    truth: np.ndarray,
    unknown: np.ndarray,
    typical: tuple[dict[str, float], float],
    head_probs: np.ndarray | None,
    extra: tuple[Novelty, np.ndarray] | None = None,
) -> tuple[Policy, Scored]:
    """Calibrate P(right) on in-scope rows (and P(in scope) where unknown rows exist).

    `extra` = (novelty model, the rows' vectors): its distances join P(in scope)'s features."""
    per, overall = typical
    guess, _tie, _raw, dist = guesses(codes, scores, len(labels), best.rule, best.k, head_probs)
    x = features(codes, scores, best.k, guess, dist, labels, per, overall)
    novelty, vectors = extra if extra is not None else (None, None)
    known = ~unknown
    named = np.array([labels[g] if g >= 0 else None for g in guess], dtype=object)
    right = (named == truth) & known
    scope = None
    names: tuple[str, ...] = FEATURES
    if unknown.any():
        if novelty is not None:
            xs, names = np.hstack([x, novelty.features(np.asarray(vectors))]), (*FEATURES, *NOVELTY_FEATURES)
        else:
            xs = x
        scope = fit_calibration(xs, known, names)
    policy = Policy(
        fit_calibration(x[known], right[known], FEATURES),
        per,
        overall,
        scope,
        "knn" if head_probs is None else "head" if best.rule.blend == 1.0 else "ensemble",
        novelty,
    )
    sc = score_rows(codes, scores, labels, best.rule, best.k, policy, head_probs, vectors)
    if scope is not None:  # choose the novelty floor on honest scores: each row's P(in scope) from the other folds
        sc = replace(sc, familiarity=np.where(sc.guess < 0, -np.inf, _out_of_fold(xs, known, names)))
    return policy, sc


def _out_of_fold(x: np.ndarray, known: np.ndarray, names: Sequence[str], folds: int = 5) -> np.ndarray:
    """P(in scope) of each row from a fit on the other folds (stratified, fixed seed)."""
    rng = np.random.default_rng(0)
    fold = np.empty(len(x), dtype=np.int64)
    for group in (np.where(known)[0], np.where(~known)[0]):
        fold[group] = rng.permutation(len(group)) % folds
    out = np.empty(len(x))
    for f in range(folds):
        held = fold == f
        out[held] = fit_calibration(x[~held], known[~held], names).probability(x[held])
    return out
