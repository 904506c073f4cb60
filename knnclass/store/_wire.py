"""The wire form of Store calls: JSON with typed values, vectors as base64 float32, NaN and infinities by name.

Used by the service's store route and RemoteStore, so a CLI process can drive the store a
running service holds. Only the types below travel; anything else is refused.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from typing import Any

import numpy as np

from ..data import Example
from ..errors import InputError
from .base import CollectionMeta, Cond, Hit, Ref, Where

__all__ = ["WIRE_TYPES", "decode", "encode", "encode_hits", "register"]

WIRE_TYPES: dict[str, type] = {t.__name__: t for t in (Ref, Example, Hit, CollectionMeta, Where, Cond)}


def register(cls: type) -> type:
    """Let dataclass `cls` travel (fields must themselves be wire values); usable as a decorator."""
    WIRE_TYPES[cls.__name__] = cls
    return cls


def encode(x: Any) -> Any:
    """`x` as plain JSON values."""
    if isinstance(x, float | np.floating):
        f = float(x)  # JSON has no NaN or infinity (orjson writes null): they travel by name
        return f if math.isfinite(f) else {"$f": str(f)}
    if x is None or isinstance(x, bool | int | str):
        return x
    if isinstance(x, np.ndarray):
        a = np.ascontiguousarray(x, dtype=np.float32)
        return {"$nd": base64.b64encode(a.tobytes()).decode("ascii"), "shape": list(a.shape)}
    if isinstance(x, np.integer):
        return x.item()
    if isinstance(x, list | tuple):
        return [encode(v) for v in x]
    if isinstance(x, dict):
        return {"$map": [[encode(k), encode(v)] for k, v in x.items()]}
    name = type(x).__name__
    if dataclasses.is_dataclass(x) and WIRE_TYPES.get(name) is type(x):
        return {"$t": name, "v": {f.name: encode(getattr(x, f.name)) for f in dataclasses.fields(x)}}
    raise InputError(f"cannot send a {name} to the service")


def encode_hits(rows: list[list[Hit]]) -> list[Any]:
    """Search results as columns per query: what `encode` gives, in a form several times cheaper
    to make and to send (a tune's searches return hundreds of thousands of hits)."""
    out: list[Any] = []
    for hits in rows:
        cols: dict[str, Any] = {
            "id": [h.id for h in hits],
            "label": [h.label for h in hits],
            "score": [encode(h.score) for h in hits],
        }
        if any(h.text is not None for h in hits):
            cols["text"] = [h.text for h in hits]
        if any(h.labels for h in hits):
            cols["labels"] = [h.labels for h in hits]  # str -> str maps: plain JSON objects
        out.append({"$hits": cols})
    return out


def _decode_hits(cols: dict[str, Any]) -> list[Hit]:
    n = len(cols["id"])
    texts = cols.get("text") or [None] * n
    labels = cols.get("labels") or [None] * n
    scores = [decode(s) for s in cols["score"]]
    return [
        Hit(str(i), str(lab), float(sc), t, dict(lb) if lb else {})
        for i, lab, sc, t, lb in zip(cols["id"], cols["label"], scores, texts, labels, strict=True)
    ]


def decode(x: Any) -> Any:
    """The value `encode` (or `encode_hits`) made `x` from."""
    if isinstance(x, list):
        return [decode(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "$hits" in x:
        return _decode_hits(x["$hits"])
    if "$f" in x:
        return float(x["$f"])
    if "$nd" in x:
        shape = tuple(int(s) for s in x["shape"])
        return np.frombuffer(base64.b64decode(x["$nd"]), dtype=np.float32).reshape(shape).copy()
    if "$map" in x:
        return {_key(decode(k)): decode(v) for k, v in x["$map"]}
    if "$t" in x:
        cls = WIRE_TYPES.get(str(x["$t"]))
        if cls is None:
            raise InputError(f"unknown wire type {x['$t']!r}")
        fields = {k: decode(v) for k, v in dict(x["v"]).items()}
        return cls(**fields)
    raise InputError("malformed wire value")


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k
