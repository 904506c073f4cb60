"""Calibration, familiarity and operating points: exact on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from knnclass.calibration import Calibration, auroc, ece, fit_calibration, reliability_bins
from knnclass.errors import InputError
from knnclass.policy import Policy, reasons, score_rows, typical_similarity
from knnclass.store.base import Hit
from knnclass.tuning import Objective, tune_rule
from knnclass.voting import FEATURES, Rule, label_nearest


def test_logistic_fit_recovers_a_known_probability() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 2))
    p = 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.0)))
    y = rng.random(len(p)) < p
    cal = fit_calibration(x, y, ["a", "b"])
    got = cal.probability(x)
    assert np.abs(got - p).max() < 0.03
    assert ece(got, y) < 0.02
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="expects 2 features"):
        cal.probability(x[:, :1])


def test_separable_data_does_not_blow_up() -> None:
    x = np.r_[np.zeros(50), np.ones(50)][:, None]
    y = np.r_[np.zeros(50), np.ones(50)]
    cal = fit_calibration(x, y, ["a"])
    p = cal.probability(x)
    assert np.all(np.isfinite(cal.coef)) and p[:50].max() < 0.05 and p[50:].min() > 0.95


def test_ece_and_bins() -> None:
    conf = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.1])
    right = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    assert ece(conf, right) == pytest.approx((4 * abs(0.75 - 0.9) + 2 * abs(0.0 - 0.1)) / 6)
    assert [b[3] for b in reliability_bins(conf, right)] == [2, 4]


def test_auroc_counts_ties_as_half() -> None:
    assert auroc(np.array([3.0, 2.0, 1.0]), np.array([True, False, False])) == 1.0
    assert auroc(np.array([1.0, 2.0, 3.0]), np.array([True, False, False])) == 0.0
    assert auroc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5


def test_label_nearest_and_typical() -> None:
    codes = np.array([[0, 1, 0, 0], [1, 1, -1, -1]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.0, 0.0]])
    assert label_nearest(codes, scores, np.array([0, 1])) == pytest.approx([0.8, 0.45])
    hits = [[Hit("2", "a", 0.9), Hit("3", "a", 0.7)], [Hit("1", "a", 0.5)], [Hit("1", "a", 0.2)]]
    per, overall = typical_similarity(["a", "a", "b"], hits)
    assert per == {"a": pytest.approx(0.65), "b": 0.0} and overall == pytest.approx(0.5)


def _rows(n: int, seed: int = 0) -> tuple[list[str], list[list[Hit]]]:
    """Two labels; a row's neighbours agree (high similarity) or not (low), so calibration can learn."""
    rng = np.random.default_rng(seed)
    truth, hits = [], []
    for i in range(n):
        t = "a" if i % 2 else "b"
        other = "b" if t == "a" else "a"
        easy = rng.random() < 0.7
        row = []
        for j in range(5):
            lab = t if (easy or rng.random() < 0.5) else other
            row.append(Hit(f"{i}-{j}", lab, (0.9 if easy else 0.5) - 0.01 * j + float(rng.normal(0, 0.01))))
        row.sort(key=lambda h: -h.score)
        truth.append(t)
        hits.append(row)
    return truth, hits


def test_tuning_calibrates_and_meets_a_target_accuracy() -> None:
    truth, hits = _rows(2000)
    typical = typical_similarity(truth, hits)
    res = tune_rule(truth, hits, 1000, typical=typical, objective=Objective(target_accuracy=0.99, unknown_rate=0))
    assert res.policy is not None and res.point["target_met"]
    assert res.point["answered_accuracy"] >= 0.99 and 0.5 < res.point["coverage"] < 1
    rule = res.best.rule
    assert rule.threshold > 0 and rule.novelty is None
    # serving the same rows with the stored rule reproduces the tuned point exactly
    labels = ["a", "b"]
    from knnclass.policy import hits_to_arrays

    codes, scores = hits_to_arrays(hits, labels, 5)
    sc = score_rows(codes, scores, labels, rule, res.best.k, Policy.from_dict(res.policy.to_dict()))
    why = reasons(sc, rule)
    answered = [w is None for w in why]
    right = [labels[g] == t for g, t in zip(sc.guess, truth, strict=True)]
    assert np.mean(answered) == pytest.approx(res.point["coverage"])
    assert np.mean([r for r, a in zip(right, answered, strict=True) if a]) == pytest.approx(
        res.point["answered_accuracy"]
    )
    assert ece(sc.probability, np.array(right)) < 0.05
    # the guess holds its calibrated probability; another label the neighbours named gets its own
    # (lower on average), and the two never sum past one
    assert np.allclose(sc.dist[np.arange(len(truth)), sc.guess], sc.probability)
    split = (sc.dist > 0).sum(axis=1) == 2
    assert split.any() and np.all(sc.dist.sum(axis=1) <= 1 + 1e-9)
    other = sc.dist.copy()
    other[np.arange(len(truth)), sc.guess] = 0
    assert other.max(axis=1)[split].mean() < sc.probability[split].mean()


def test_unknown_rows_are_weighed_by_the_objective_not_their_count() -> None:
    truth, hits = _rows(1000)
    # a few unknown rows, far from everything: neighbours of either label with low similarity
    for i in range(20):
        truth.append("OOS")
        hits.append([Hit(f"u{i}-{j}", "a" if j % 2 else "b", 0.2) for j in range(5)])
    typical = typical_similarity(
        [t for t in truth if t != "OOS"], [h for t, h in zip(truth, hits, strict=True) if t != "OOS"]
    )
    res = tune_rule(truth, hits, 1000, unknown_label="OOS", typical=typical)
    assert res.policy is not None and res.policy.known is not None
    # 20 unknown rows among 1,020 still decide the point: all abstained on, in-scope accuracy kept
    assert res.point["unknown_recall"] == 1.0 and res.point["in_scope_accuracy"] > 0.8
    with pytest.raises(InputError, match="unknown recall needs"):
        tune_rule(truth[:1000], hits[:1000], 1000, typical=typical, objective=Objective(target_unknown_recall=0.9))


def test_without_unknown_rows_the_floor_flags_the_given_rate() -> None:
    truth, hits = _rows(1000)
    res = tune_rule(truth, hits, 1000, typical=typical_similarity(truth, hits), objective=Objective(unknown_rate=0.05))
    assert res.best.rule.novelty is not None
    assert 0.93 <= res.point["coverage"] <= 0.96  # about 5 % fall below the floor


def test_objective_and_rule_validation() -> None:
    with pytest.raises(InputError):
        Objective(target_accuracy=0.9, target_unknown_recall=0.9)
    with pytest.raises(InputError):
        Objective(target_accuracy=1.5)
    with pytest.raises(InputError):
        Rule(novelty=float("nan"))
    r = Rule("weighted", "k", 5, 0.4, -0.1)
    assert Rule.from_dict(r.to_dict()) == r and r.with_k(3) == Rule("weighted", "k", 3, 0.4, -0.1)
    assert "novelty" in r.describe() and len(FEATURES) == 8


def test_default_objective_floors_unknown_recall_then_maximises_accuracy() -> None:
    from knnclass.cli import cli
    from knnclass.tuning import DEFAULT_UNKNOWN_RECALL, _pick

    # three operating points: in-scope accuracy falls as unknown recall rises (200 unknown rows)
    curve = {
        "in_scope_accuracy": np.array([0.95, 0.90, 0.85]),
        "unknown_recall": np.array([0.50, 0.80, 0.95]),
        "n_unknown": np.full(3, 200.0),
        "n_unknown_caught": np.array([100.0, 160.0, 190.0]),
    }
    first, fallback = Objective().plans(has_unknown=True)
    assert first == Objective(target_unknown_recall=DEFAULT_UNKNOWN_RECALL) and fallback.unknown_weight == 0.5
    # the floor: the most accurate point whose recall's lower bound reaches 0.75 (160/200: 0.765)
    assert _pick([curve], first, True) == (True, 0.90, 0, 1)
    # the balanced weight would take the far end: 0.5 x 0.85 + 0.5 x 0.95 > 0.5 x 0.90 + 0.5 x 0.80
    assert _pick([curve], fallback, True)[3] == 2
    assert _pick([curve], Objective(unknown_weight=0.1), True)[3] == 0
    # given a target or a weight, or without unknown rows, the objective is tried alone
    for given in (Objective(unknown_weight=0.3), Objective(target_accuracy=0.9), Objective(target_unknown_recall=0.8)):
        assert given.plans(has_unknown=True) == [given]
    assert Objective().plans(has_unknown=False) == [Objective()]
    assert Objective().describe() == (
        "unknown recall's 90 % lower bound >= 0.75, in-scope accuracy maximised (the default)"
    )
    assert Objective(unknown_weight=0.5).describe() == "0.5 x in-scope accuracy + 0.5 x unknown recall (balanced)"
    assert Objective(unknown_weight=0.25).describe() == "0.75 x in-scope accuracy + 0.25 x unknown recall"
    assert Objective().describe(has_unknown=False) == "most accurate point, novelty floor flagging 1 % of in-scope rows"
    tune = cli.commands["tune"]  # type: ignore[attr-defined]
    default = next(p.default for p in tune.params if p.name == "unknown_weight")
    assert default == Objective().unknown_weight is None


def test_too_few_unknown_rows_for_the_recall_floor_fall_back_to_balanced() -> None:
    truth, hits = _rows(1000)
    for i in range(4):  # 4 of 4 caught: the 90 % bound is 0.71, short of the floor
        truth.append("OOS")
        hits.append([Hit(f"u{i}-{j}", "a" if j % 2 else "b", 0.2) for j in range(5)])
    typical = typical_similarity(truth[:1000], hits[:1000])
    res = tune_rule(truth, hits, 1000, unknown_label="OOS", typical=typical)
    assert res.point["objective"] == (
        "0.5 x in-scope accuracy + 0.5 x unknown recall (balanced) (the default, where too few unknown rows show its floor)"
    )
    assert res.point["target_met"] and res.point["unknown_recall"] == 1.0
    given = tune_rule(
        truth, hits, 1000, unknown_label="OOS", typical=typical, objective=Objective(target_unknown_recall=0.75)
    )
    assert not given.point["target_met"]  # a target the user set is reported as missed, not replaced


def test_wilson_lower_bound_of_a_proportion() -> None:
    from knnclass.tuning import wilson_lower

    low = wilson_lower(np.array([75.0, 750.0, 0.0, 5.0]), np.array([100.0, 1000.0, 0.0, 5.0]), 0.9)
    assert low[0] == pytest.approx(0.69076, abs=1e-4)  # z = 1.2816: by hand from the Wilson score formula
    assert low[0] < low[1] < 0.75  # more trials, a tighter bound, still below the proportion
    assert low[2] == 0.0 and 0.7 < low[3] < 1.0  # no trials: nothing known; 5 of 5 is not certainty
    assert wilson_lower(np.array([75.0]), 100, 0.5)[0] == pytest.approx(0.75)


def test_a_target_counts_as_reached_where_its_lower_bound_reaches_it() -> None:
    from knnclass.tuning import _choose

    # 20 unknown rows: recall 15/20 reaches 0.75 only as a point estimate; 18/20's 90 % bound does too
    curve = {
        "in_scope_accuracy": np.array([0.95, 0.90, 0.80]),
        "unknown_recall": np.array([0.60, 0.75, 0.90]),
        "n_unknown": np.full(3, 20.0),
        "n_unknown_caught": np.array([12.0, 15.0, 18.0]),
    }
    assert _choose(curve, Objective(target_unknown_recall=0.75, confidence=0.5), True)[:3:2] == (1, True)
    assert _choose(curve, Objective(target_unknown_recall=0.75), True)[:3:2] == (2, True)
    i, _, met = _choose(curve, Objective(target_unknown_recall=0.9), True)
    assert (i, met) == (2, False)  # unreachable with 90 % confidence: the highest recall, said so
    acc = {
        "coverage": np.array([0.0, 0.5, 0.9]),
        "answered_accuracy": np.array([1.0, 0.99, 0.97]),
        "n_answered": np.array([0.0, 50.0, 900.0]),
        "n_right": np.array([0.0, 49.5, 873.0]),
    }
    assert _choose(acc, Objective(target_accuracy=0.95, confidence=0.5), False)[0] == 2
    assert _choose(acc, Objective(target_accuracy=0.96), False)[0] == 2  # 873 of 900: bound 0.962
    # 0.965: no point's bound reaches it (answering nothing proves nothing): the most accurate point, said so
    assert _choose(acc, Objective(target_accuracy=0.965), False)[::2] == (0, False)
    assert (
        Objective(target_accuracy=0.98).describe() == "answered accuracy's 90 % lower bound >= 0.98, coverage maximised"
    )
    assert Objective(target_accuracy=0.98, confidence=0.5).describe() == "answered accuracy >= 0.98, coverage maximised"
    with pytest.raises(InputError, match="target confidence"):
        Objective(target_accuracy=0.98, confidence=0.3)
