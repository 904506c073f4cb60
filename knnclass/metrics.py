"""Classification metrics with explicit abstentions (a prediction of None)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["evaluation_metrics", "score_predictions"]


def score_predictions(
    truth: Sequence[str], predicted: Sequence[str | None], unknown_label: str | None = None
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1 and abstain rate; rates are fractions.

    Rows whose truth is `unknown_label` are right only when abstained on; an abstention
    on any other row is wrong.
    """
    if len(truth) != len(predicted):
        raise ValueError("truth and predictions differ in length")
    n = len(truth)
    correct = 0
    in_scope = in_scope_right = unknown = unknown_abstained = abstained = 0
    tp: dict[str, int] = {}
    fp: dict[str, int] = {}
    fn: dict[str, int] = {}
    support: dict[str, int] = {}
    for t, p in zip(truth, predicted, strict=True):
        is_unknown = unknown_label is not None and t == unknown_label
        abstained += p is None
        if is_unknown:
            unknown += 1
            unknown_abstained += p is None
            correct += p is None
            if p is not None:
                fp[p] = fp.get(p, 0) + 1
            continue
        in_scope += 1
        support[t] = support.get(t, 0) + 1
        if p == t:
            correct += 1
            in_scope_right += 1
            tp[t] = tp.get(t, 0) + 1
        else:
            fn[t] = fn.get(t, 0) + 1
            if p is not None:
                fp[p] = fp.get(p, 0) + 1
    per_class: dict[str, dict[str, float]] = {}
    for label in sorted(set(support) | set(fp)):
        a, b, c = tp.get(label, 0), fp.get(label, 0), fn.get(label, 0)
        prec = a / (a + b) if a + b else 0.0
        rec = a / (a + c) if a + c else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[label] = {"precision": prec, "recall": rec, "f1": f1, "support": support.get(label, 0)}
    scored = [v["f1"] for k, v in per_class.items() if support.get(k, 0) > 0]
    out: dict[str, Any] = {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "macro_f1": sum(scored) / len(scored) if scored else 0.0,
        "abstain_rate": abstained / n if n else 0.0,
        "per_class": per_class,
    }
    if unknown_label is not None:
        out["in_scope_accuracy"] = in_scope_right / in_scope if in_scope else 0.0
        out["unknown_recall"] = unknown_abstained / unknown if unknown else 0.0
    return out


def evaluation_metrics(truth: Sequence[str], preds: Sequence[Any], unknown_label: str | None = None) -> dict[str, Any]:
    """`score_predictions` plus what a triage policy needs, from predictions with abstentions.

    coverage: share answered; answered_accuracy: right among answered (an answered unknown
    row is wrong); guess_accuracy: the best guesses' accuracy on in-scope rows, abstentions
    ignored; ece: calibration error of `confidence` for those guesses; reasons: abstentions
    by reason; with `unknown_label` also auroc_unknown (low familiarity ranking unknown rows
    first; None when the collection has no policy).
    """
    from .calibration import auroc, ece

    m = score_predictions(truth, [p.label for p in preds], unknown_label)
    answered = [p.label is not None for p in preds]
    right = [p.label == t and t != unknown_label for p, t in zip(preds, truth, strict=True)]
    in_scope = [t != unknown_label for t in truth]
    guess_right = np.array([p.suggestion == t for p, t, s in zip(preds, truth, in_scope, strict=True) if s])
    conf = np.array([p.confidence for p, s in zip(preds, in_scope, strict=True) if s])
    n_answered = sum(answered)
    reasons: dict[str, int] = {}
    for p in preds:
        if p.reason:
            reasons[p.reason] = reasons.get(p.reason, 0) + 1
    m.update(
        coverage=n_answered / len(preds) if preds else 0.0,
        answered_accuracy=sum(right) / n_answered if n_answered else 0.0,
        guess_accuracy=float(guess_right.mean()) if len(guess_right) else 0.0,
        ece=ece(conf, guess_right) if len(conf) else 0.0,
        reasons=reasons,
    )
    if unknown_label is not None:
        fam = [p.familiarity for p in preds]
        ok = all(f is not None for f in fam)
        m["auroc_unknown"] = auroc(-np.array(fam, dtype=np.float64), ~np.array(in_scope)) if ok else None
    return m
