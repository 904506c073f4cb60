"""The store route's wire form: values survive encode -> JSON bytes -> decode."""

from __future__ import annotations

import math

import numpy as np
import orjson

from knnclass.data import Example
from knnclass.store._wire import decode, encode, encode_hits
from knnclass.store.base import CollectionMeta, Hit, Ref


def _round_trip(x: object) -> object:
    return decode(orjson.loads(orjson.dumps(encode(x))))


def test_non_finite_floats_travel_by_name() -> None:
    # orjson writes NaN and infinities as null; the wire form must not turn a stored NaN into None
    out = _round_trip({"loss": float("nan"), "hi": float("inf"), "lo": -math.inf, "np": np.float32("nan")})
    assert isinstance(out, dict)
    assert math.isnan(out["loss"]) and math.isnan(out["np"])
    assert out["hi"] == math.inf and out["lo"] == -math.inf


def test_typed_values_round_trip() -> None:
    v = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = _round_trip([Ref("c", "v1"), Example("a", "text", "x"), Hit("a", "x", 0.5), v, 3, True, None, 1.25])
    assert isinstance(out, list)
    assert out[:3] == [Ref("c", "v1"), Example("a", "text", "x"), Hit("a", "x", 0.5)]
    np.testing.assert_array_equal(out[3], v)
    assert out[4:] == [3, True, None, 1.25] and type(out[5]) is bool
    meta = CollectionMeta("e", "src", 3, tuning={"auroc": float("nan")}, extra={"k": [1, 2]})
    back = _round_trip(meta)
    assert isinstance(back, CollectionMeta) and back.extra == meta.extra and back.tuning is not None
    assert math.isnan(back.tuning["auroc"])


def test_search_hits_travel_as_columns() -> None:
    rows = [
        [Hit("a", "x", 0.5), Hit("b", "y", -0.25)],
        [],
        [Hit("c", "x", 0.75, "some text", {"queue": "billing"}), Hit("d", "z", float("nan"), None, {})],
    ]
    wire = orjson.dumps(encode_hits(rows))
    back = decode(orjson.loads(wire))
    assert back[:2] == rows[:2]
    assert back[2][0] == rows[2][0] and back[2][0].labels == {"queue": "billing"}
    assert back[2][1].id == "d" and math.isnan(back[2][1].score) and back[2][1].labels == {}
    assert all(type(h) is Hit for row in back for h in row)
    tune_row = [[Hit(f"ticket-{i}", "card_arrival", 0.5 + i / 1000) for i in range(200)]]
    assert len(orjson.dumps(encode_hits(tune_row))) < len(orjson.dumps(encode(tune_row))) / 2  # why columns
