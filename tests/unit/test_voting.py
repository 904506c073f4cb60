"""Vote rules: top-k, top-k% rounding, weighting, ties, abstain."""

from __future__ import annotations

import numpy as np
import pytest

from knnclass.errors import InputError
from knnclass.voting import Neighbour, Rule, decide, k_for_percent, vote_batch


def nbs(*pairs: tuple[str, float]) -> list[Neighbour]:
    return [Neighbour(f"id{i}", lab, s) for i, (lab, s) in enumerate(pairs)]


def test_majority_top_k_uses_only_first_k() -> None:
    n = nbs(("a", 0.9), ("a", 0.8), ("b", 0.7), ("b", 0.6), ("b", 0.5))
    assert decide(n, Rule("majority", "k", 3), 100).label == "a"
    d = decide(n, Rule("majority", "k", 5), 100)
    assert d.label == "b"
    assert d.confidence == pytest.approx(3 / 5)
    assert d.votes == {"a": 2.0, "b": 3.0}


def test_majority_tie_goes_to_higher_similarity_sum() -> None:
    # 2 vs 2: b's neighbours are closer in sum, regardless of label order.
    n = nbs(("a", 0.9), ("b", 0.89), ("b", 0.88), ("a", 0.5))
    d = decide(n, Rule("majority", "k", 4), 100)
    assert d.label == "b" and not d.abstained
    flipped = [Neighbour(x.id, {"a": "b", "b": "a"}[x.label], x.score) for x in n]
    assert decide(flipped, Rule("majority", "k", 4), 100).label == "a"


def test_exact_tie_abstains_never_first_label() -> None:
    n = nbs(("a", 0.8), ("b", 0.8))
    d = decide(n, Rule("majority", "k", 2), 10)
    assert d.abstained and d.label is None and d.reason == "tie"
    d = decide(n, Rule("weighted", "k", 2), 10)
    assert d.abstained and d.reason == "tie"


def test_weighted_vote_follows_similarity() -> None:
    # Majority says b (2 votes), weighting by similarity says a.
    n = nbs(("a", 0.95), ("b", 0.30), ("b", 0.25))
    assert decide(n, Rule("majority", "k", 3), 10).label == "b"
    d = decide(n, Rule("weighted", "k", 3), 10)
    assert d.label == "a"
    assert d.confidence == pytest.approx(0.95 / 1.5)


def test_negative_similarities_carry_no_weight() -> None:
    n = nbs(("a", -0.2), ("b", -0.1))
    d = decide(n, Rule("weighted", "k", 2), 10)
    assert d.abstained and d.reason == "no_neighbours"


def test_threshold_abstains_on_low_confidence() -> None:
    n = nbs(("a", 0.9), ("b", 0.8), ("a", 0.7), ("c", 0.6))
    d = decide(n, Rule("majority", "k", 4, threshold=0.6), 10)
    assert d.abstained and d.reason == "low_confidence" and d.confidence == pytest.approx(0.5)
    assert decide(n, Rule("majority", "k", 4, threshold=0.5), 10).label == "a"


def test_no_neighbours_abstains() -> None:
    d = decide([], Rule(), 0)
    assert d.abstained and d.reason == "no_neighbours"


@pytest.mark.parametrize(
    ("pct", "n", "k"),
    [
        (1, 100, 1),
        (1, 10003, 101),
        (0.5, 10003, 51),
        (0.05, 10003, 6),
        (10, 7, 1),
        (50, 7, 4),
        (100, 7, 7),
        (0.01, 50, 1),
    ],
)
def test_percent_rounds_up_and_is_at_least_one(pct: float, n: int, k: int) -> None:
    assert k_for_percent(pct, n) == k
    assert Rule("majority", "pct", pct).k(n) == k


def test_top_percent_vote_scales_with_index_size() -> None:
    n = nbs(("a", 0.9), ("b", 0.8), ("b", 0.7), ("b", 0.6))
    rule = Rule("majority", "pct", 10)
    assert decide(n, rule, 10).label == "a"  # k = 1
    assert decide(n, rule, 40).label == "b"  # k = 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vote": "plurality"},
        {"size": "frac"},
        {"size": "k", "value": 0},
        {"size": "k", "value": 2.5},
        {"size": "pct", "value": 0},
        {"size": "pct", "value": 101},
        {"threshold": 1.5},
    ],
)
def test_invalid_rules_are_input_errors(kwargs: dict) -> None:
    with pytest.raises(InputError):
        Rule(**kwargs)


def test_rule_roundtrip() -> None:
    r = Rule("weighted", "pct", 0.5, 0.25)
    assert Rule.from_dict(r.to_dict()) == r


def test_vote_batch_matches_decide_on_random_data() -> None:
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", "d"]
    codes = rng.integers(0, 4, size=(300, 9))
    scores = -np.sort(-rng.random((300, 9)), axis=1)
    for vote in ("majority", "weighted"):
        for k in (1, 3, 9):
            win, conf, tie, _ = vote_batch(codes, scores, k, vote, 4)
            for i in range(300):
                n = [Neighbour(str(j), labels[codes[i, j]], float(scores[i, j])) for j in range(9)]
                d = decide(n, Rule(vote, "k", k), 1000)
                assert d.abstained == bool(tie[i] or win[i] < 0)
                assert d.label == (None if d.abstained else labels[win[i]])
                assert d.confidence == pytest.approx(float(conf[i]))


def test_padding_rows_vote_on_what_exists() -> None:
    codes = np.array([[0, 1, -1, -1]])
    scores = np.array([[0.9, 0.5, 0.0, 0.0]])
    win, conf, tie, _ = vote_batch(codes, scores, 4, "majority", 2)
    assert win[0] == 0 and not tie[0] and conf[0] == pytest.approx(0.5)
