"""Long-text strategies: the window helpers, and the fake encoder's head / head_tail / chunk."""

from __future__ import annotations

import numpy as np
import pytest

from knnclass.encoders import LONG_TEXT_STRATEGIES, FakeEncoder
from knnclass.encoders.base import check_long, chunk_spans, head_tail
from knnclass.errors import InputError


def test_the_strategies() -> None:
    assert LONG_TEXT_STRATEGIES == ("head", "head_tail", "chunk")
    for s in LONG_TEXT_STRATEGIES:
        check_long(s)
    with pytest.raises(InputError, match="head, head_tail, chunk"):
        check_long("tail")


def test_head_tail_keeps_half_of_each_end() -> None:
    items = list(range(100))
    assert head_tail(items, 100) == items and head_tail(items, 200) == items
    assert head_tail(items, 10) == [0, 1, 2, 3, 4, 95, 96, 97, 98, 99]
    assert head_tail(items, 7) == [0, 1, 2, 3, 97, 98, 99]  # the odd one to the head
    assert head_tail(items, 1) == [0]
    for budget in (1, 2, 3, 50, 99):
        assert len(head_tail(items, budget)) == budget


@pytest.mark.parametrize("window", [1, 2, 4, 7, 254])
def test_chunk_spans_cover_everything_with_a_quarter_overlap(window: int) -> None:
    for n in (0, 1, window - 1, window, window + 1, 3 * window + 5, 1000):
        spans = chunk_spans(n, window)
        if n <= window:
            assert spans == [(0, n)]
            continue
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(0 < b - a <= window for a, b in spans)
        stride = max(1, window - window // 4)
        assert [a for a, _ in spans] == list(range(0, stride * len(spans), stride))
        covered = set().union(*(range(a, b) for a, b in spans))
        assert covered == set(range(n))
        assert spans[-2][1] < n  # no window past the one that reaches the end


def test_fake_encoder_gives_a_short_text_one_vector_whatever_the_strategy() -> None:
    enc = FakeEncoder(dim=16, topics=["card"], max_tokens=12)
    texts = ["my card is lost", "ten words exactly here one two three four five six", ""]
    head = enc.embed(texts)
    for long in LONG_TEXT_STRATEGIES:
        np.testing.assert_array_equal(enc.embed(texts, long=long), head)
    with pytest.raises(InputError):
        enc.embed(texts, long="middle")


def test_fake_encoder_head_is_what_it_always_was() -> None:
    """ "head" reads the whole text however long (the fake has never truncated)."""
    enc = FakeEncoder(dim=16, topics=["refund"], max_tokens=6)
    text = "one two three four five six seven eight refund"
    v = enc._unit(text) + 3.0 * enc._unit("topic:refund")
    np.testing.assert_array_equal(enc.embed([text])[0], (v / np.linalg.norm(v)).astype(np.float32))


def test_fake_encoder_long_texts_differ_by_strategy() -> None:
    enc = FakeEncoder(dim=32, topics=["refund", "pin"], max_tokens=10)  # 8 words of room
    words = [f"w{i}" for i in range(30)]
    words[15] = "pin"  # only in the middle
    words[29] = "refund"  # only at the very end
    text = " ".join(words)
    head, head_tail_, chunk = (enc.embed([text], long=s)[0] for s in LONG_TEXT_STRATEGIES)
    for v in (head, head_tail_, chunk):
        assert abs(float(np.linalg.norm(v)) - 1) < 1e-6
    assert not np.array_equal(head, head_tail_) and not np.array_equal(head_tail_, chunk)
    # head_tail: the first 4 and the last 4 words, nothing between
    np.testing.assert_array_equal(head_tail_, enc.embed([" ".join(words[:4] + words[-4:])])[0])
    # chunk: windows of 8 words stepping by 6, weighted by their length
    spans = [(0, 8), (6, 14), (12, 20), (18, 26), (24, 30)]
    assert chunk_spans(30, 8) == spans
    parts = [enc._vector(" ".join(words[a:b])) * (b - a) for a, b in spans]
    mean = np.sum(parts, axis=0)
    np.testing.assert_allclose(chunk, mean / np.linalg.norm(mean), rtol=1e-6, atol=1e-7)
    pin, refund = enc._unit("topic:pin"), enc._unit("topic:refund")
    assert float(chunk @ pin) > 0.2 and float(head_tail_ @ pin) < 0.2  # the middle: only chunk sees it
    assert float(head_tail_ @ refund) > 0.5 and float(chunk @ refund) > 0.1  # the end: both see it
