"""The ensemble rule: a head's probabilities blended with the vote's shares, the head's share by validation."""

from __future__ import annotations

import numpy as np
import pytest

from knnclass.errors import InputError
from knnclass.policy import guesses
from knnclass.store.base import Hit
from knnclass.tuning import BLENDS, tune_rule
from knnclass.voting import Rule, blend


def test_blend_mixes_by_the_head_share_and_keeps_the_head_where_nothing_voted() -> None:
    votes = np.array([[1.0, 0.0], [0.0, 0.0]])
    head = np.array([[0.2, 0.8], [0.3, 0.7]])
    np.testing.assert_allclose(blend(votes, head, 0.25), [[0.8, 0.2], [0.3, 0.7]])
    np.testing.assert_allclose(blend(votes, head, 1.0), head)


def test_rule_carries_its_head_share() -> None:
    r = Rule("weighted", "k", 5, blend=0.6)
    assert Rule.from_dict(r.to_dict()) == r and "head share=0.6" in r.describe()
    assert Rule.from_dict({"vote": "majority", "size": "k", "value": 3}).blend == 1.0  # rules stored before
    with pytest.raises(InputError, match="blend"):
        Rule(blend=1.5)


def _complementary() -> tuple[list[str], list[list[Hit]], tuple[list[str], np.ndarray]]:
    """Rows where the vote is wrong but the head surely right, and rows the other way round
    with the head only just wrong: each alone is right on half, a blend on all."""
    truth: list[str] = []
    hits: list[list[Hit]] = []
    probs: list[list[float]] = []
    for i, (mine, other) in enumerate([("a", "b"), ("b", "a")] * 10):
        sure = 0.95 if mine == "a" else 0.05
        if i < 10:  # the vote is misled, the head is sure
            row = [other, other, other, mine, mine]
            p = [sure, 1 - sure]
        else:  # the vote is unanimous, the head leans wrong
            row = [mine] * 5
            p = [0.45, 0.55] if mine == "a" else [0.55, 0.45]
        truth.append(mine)
        hits.append([Hit(f"{i}-{j}", lab, 0.9 - 0.01 * j) for j, lab in enumerate(row)])
        probs.append(p)
    return truth, hits, (["a", "b"], np.array(probs))


def test_tuning_picks_a_head_share_that_beats_the_head_and_the_vote() -> None:
    truth, hits, head = _complementary()
    knn = tune_rule(truth, hits, 5)
    assert knn.best.score == pytest.approx(0.5)
    tuned = tune_rule(truth, hits, 5, head=head, blends=(*BLENDS, 1.0))
    assert tuned.blends[1.0] == pytest.approx(0.5)  # the head alone
    assert 0 < tuned.best.rule.blend < 1 and tuned.best.score == pytest.approx(1.0)
    assert tuned.summary()["blends"]["1"] == pytest.approx(0.5)
    # what tuning scored is what serving computes with the stored rule
    labels = ["a", "b"]
    codes = np.array([[labels.index(h.label) for h in row] for row in hits])
    scores = np.array([[h.score for h in row] for row in hits])
    guess, *_ = guesses(codes, scores, 2, tuned.best.rule, tuned.best.k, head[1])
    assert [labels[g] for g in guess] == truth
    # given only the head alone, it is what is tuned
    assert tune_rule(truth, hits, 5, head=head).best.rule.blend == 1.0
