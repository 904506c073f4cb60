"""Long-text strategies on the real MiniLM encoder: what each keeps of a ~1,000-token text."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from knnclass.encoders import LONG_TEXT_STRATEGIES
from knnclass.encoders.base import chunk_spans
from knnclass.errors import InputError

# ~1,000 tokens with nothing of banking in them, then the request
FILLER = (
    "Our garden club met on Saturday to plan the spring planting. We talked about tomatoes, which need full sun, "
    "and about the soil near the old oak tree, which stays wet well into April. Margaret brought seedlings of "
    "basil and parsley, and the children painted labels for every row. "
)
REQUEST = "Someone stole my card yesterday and I need it blocked right away."
LONG = FILLER * 17 + REQUEST
QUERY = "my card was stolen, please block it"


@pytest.fixture(scope="module")
def short_texts(data_dir: Path) -> list[str]:
    rows = list(csv.DictReader((data_dir / "test.csv").open(encoding="utf-8")))
    return [r["text"] for r in rows[::100]] + [""]


def _same(a: np.ndarray, b: np.ndarray, fused: bool) -> None:
    # per-row int8 on the fused ops: a text's vector does not depend on its batch, bit for bit
    if fused:
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_short_texts_get_the_head_vector_under_every_strategy(real_encoder, short_texts) -> None:  # type: ignore[no-untyped-def]
    head = real_encoder.embed(short_texts)
    for long in LONG_TEXT_STRATEGIES:
        np.testing.assert_array_equal(real_encoder.embed(short_texts, long=long), head)
    # beside a long text too (its windows share the batches)
    fused = real_encoder.graph == "model_fused.onnx"
    for long in LONG_TEXT_STRATEGIES:
        _same(real_encoder.embed([*short_texts, LONG], long=long)[:-1], head, fused)
    with pytest.raises(InputError, match="head_tail"):
        real_encoder.embed(short_texts, long="tail")


def test_a_long_text_keeps_its_end_under_head_tail_and_chunk(real_encoder) -> None:  # type: ignore[no-untyped-def]
    assert real_encoder.count_tokens([LONG])[0] > 3 * real_encoder.max_tokens
    vecs = {long: real_encoder.embed([LONG], long=long)[0] for long in LONG_TEXT_STRATEGIES}
    for v in vecs.values():
        assert abs(float(np.linalg.norm(v)) - 1) < 1e-5
    assert not np.array_equal(vecs["head"], vecs["chunk"]) and not np.array_equal(vecs["head"], vecs["head_tail"])
    q = real_encoder.embed([QUERY])[0]
    sim = {long: float(v @ q) for long, v in vecs.items()}
    # the request is only at the end: head never reads it
    assert sim["head_tail"] > sim["head"] + 0.1, sim
    assert sim["chunk"] > sim["head"] + 0.02, sim


def test_the_token_rows_each_strategy_runs(real_encoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rows: list[list[list[int]]] = []
    run = real_encoder._embed_ids

    def spy(ids: list[list[int]]) -> np.ndarray:
        rows.append([list(x) for x in ids])
        return run(ids)

    monkeypatch.setattr(real_encoder, "_embed_ids", spy)
    limit = real_encoder.max_tokens
    full = real_encoder._tok.encode(LONG).ids
    cls, sep, content = full[0], full[-1], full[1:-1]

    real_encoder.embed([LONG], long="head")
    assert rows[-1] == [[*full[: limit - 1], sep]]

    real_encoder.embed([LONG], long="head_tail")  # [CLS], 127 first, 127 last, [SEP]: exactly the limit
    half = (limit - 2) // 2
    assert rows[-1] == [[cls, *content[: limit - 2 - half], *content[-half:], sep]]
    assert len(rows[-1][0]) == limit

    real_encoder.embed([LONG, "short one", LONG], long="chunk")  # every window of both texts in one run
    windows = rows[-1]
    spans = chunk_spans(len(content), limit - 2)
    assert len(spans) >= 4 and len(windows) == 2 * len(spans) + 1
    expected = [[cls, *content[a:b], sep] for a, b in spans]
    assert windows[: len(spans)] == expected and windows[len(spans) + 1 :] == expected
    assert all(len(w) <= limit for w in windows)
