"""Hostile HTTP requests for the service: wrong types, huge numbers, deep JSON, bad UTF-8,
control characters, 1 MiB texts, 10k-element batches, odd paths. Seeded and repeatable."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

__all__ = ["hostile_requests", "run_fuzz"]

_WEIRD = ["", " ", "\x00", "\x1b[31m", "\u2028", "é", "💥", "\\ud800", "a" * 300, "../../etc/passwd", "%00", "null"]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 1, 2**63, -(2**80), 10**30, 3.5, -0.0, 1e308])
    if kind == 2:
        return rng.choice(_WEIRD) + "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(0, 20)))
    if kind == 3:
        return "word " * rng.randrange(1, 400)
    if kind == 4:
        return chr(rng.randrange(0, 32)) * rng.randrange(1, 10)
    if kind == 5:
        return rng.choice(["card lost", "transfer", "refund please", "pin"])
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 6))]
    if kind == 7:
        return {
            rng.choice(["text", "texts", "k", "rule", "label", "id", "examples", "x"]): _value(rng, depth + 1)
            for _ in range(rng.randrange(0, 4))
        }
    return {"vote": _value(rng, depth + 1), "size": rng.choice(["k", "pct", "z"]), "value": _value(rng, depth + 1)}


def _classify_body(rng: random.Random) -> Any:
    base: dict[str, Any] = rng.choice(
        [{"text": _value(rng)}, {"texts": [_value(rng) for _ in range(rng.randrange(0, 5))]}]
    )
    for key in rng.sample(["k", "rule", "include_neighbours", "truncate", "extra"], rng.randrange(0, 3)):
        base[key] = _value(rng)
    return base


def _examples_body(rng: random.Random) -> Any:
    return {
        "examples": [{"id": _value(rng), "text": _value(rng), "label": _value(rng)} for _ in range(rng.randrange(0, 4))]
    }


def hostile_requests(n: int, seed: int = 0) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(method, path, body, headers) tuples."""
    rng = random.Random(seed)
    out: list[tuple[str, str, bytes, dict[str, str]]] = []
    json_ct = {"content-type": "application/json"}
    for i in range(n):
        r = rng.random()
        if r < 0.35:
            out.append(("POST", "/v1/classify", json.dumps(_classify_body(rng)).encode(), json_ct))
        elif r < 0.5:
            out.append(("POST", "/v1/examples", json.dumps(_examples_body(rng)).encode(), json_ct))
        elif r < 0.6:
            out.append(
                ("POST", rng.choice(["/v1/classify", "/v1/examples"]), json.dumps(_value(rng)).encode(), json_ct)
            )
        elif r < 0.7:
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
            out.append(("POST", rng.choice(["/v1/classify", "/v1/examples"]), raw, json_ct))
        elif r < 0.75:
            depth = rng.choice([50, 1000, 20000])
            out.append(("POST", "/v1/classify", b'{"text":' + b"[" * depth + b"]" * depth + b"}", json_ct))
        elif r < 0.8:
            big = rng.choice(
                [
                    json.dumps({"text": "x" * ((1 << 20) - 20)}).encode(),
                    json.dumps({"text": "y" * ((1 << 20) + 10)}).encode(),
                    json.dumps({"texts": ["t"] * 10_000}).encode(),
                    b'{"text": "a", "k": ' + b"9" * 4000 + b"}",
                    b'{"text": "\xff\xfe\xfd"}',
                    b'{"text": "\\ud800\\udfff\\ud800"}',
                ]
            )
            out.append(("POST", "/v1/classify", big, json_ct))
        elif r < 0.9:
            ident = rng.choice(["card-1", "%00", "..%2F..", "a" * 3000, "%F0%9F%92%A5", "%ED%A0%80", "x y", "%ff%fe"])
            method = rng.choice(["GET", "DELETE", "PATCH"])
            body = json.dumps({"label": _value(rng)}).encode() if method == "PATCH" else b""
            out.append((method, f"/v1/examples/{ident}", body, json_ct))
        else:
            path = rng.choice(
                ["/", "/v1", "/v2/classify", "/metrics", "/livez", "/readyz", "/docs", "/v1/info", "/%%%"]
            )
            out.append((rng.choice(["GET", "POST", "PUT", "OPTIONS"]), path, b"{}", json_ct))
        if i % 7 == 0:
            out[-1] = (
                out[-1][0],
                out[-1][1],
                out[-1][2],
                {"content-type": rng.choice(["text/plain", "application/x-www-form-urlencoded", ""])},
            )
    return out


def run_fuzz(client: Any, n: int, seed: int = 0) -> Counter[int]:
    """Send n hostile requests through an httpx-style client; count status codes."""
    codes: Counter[int] = Counter()
    for method, path, body, headers in hostile_requests(n, seed):
        r = client.request(method, path, content=body, headers=headers)
        codes[r.status_code] += 1
        if r.status_code >= 500:
            raise AssertionError(f"{r.status_code} for {method} {path} {body[:200]!r}: {r.text[:300]}")
    return codes
