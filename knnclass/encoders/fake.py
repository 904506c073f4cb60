"""A deterministic fake encoder for tests: no model, exact and fast."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from .base import check_long, chunk_spans, head_tail

__all__ = ["FakeEncoder"]


class FakeEncoder:
    """Maps each text to a hash-seeded unit vector.

    With `topics`, a text containing a topic word is pulled towards that topic's
    direction, so neighbours (and votes) are predictable in tests.
    """

    def __init__(self, dim: int = 32, topics: Sequence[str] = (), pull: float = 3.0, max_tokens: int = 64):
        self._dim = dim
        self._topics = list(topics)
        self._pull = pull
        self._max_tokens = max_tokens

    @property
    def identity(self) -> str:
        key = f"fake:{self._dim}:{','.join(self._topics)}:{self._pull}"
        return "fake-" + hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def source(self) -> str:
        return "fake"

    def _unit(self, key: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self._dim)
        return v / np.linalg.norm(v)

    def _vector(self, t: str) -> np.ndarray:
        v = self._unit(t)
        low = t.lower()
        for topic in self._topics:
            if topic in low:
                v = v + self._pull * self._unit("topic:" + topic)
        return np.asarray(v / np.linalg.norm(v))

    def embed(self, texts: Sequence[str], long: str = "head") -> np.ndarray:
        """One vector per text. Tokens are words here (see count_tokens): "head" embeds the
        whole text, however long (as it always has); past max_tokens "head_tail" embeds the
        first and last words only and "chunk" the token-weighted mean of overlapping word
        windows, as OnnxEncoder does with its tokens."""
        check_long(long)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        budget = max(1, self._max_tokens - 2)  # room left by [CLS] and [SEP]
        for i, t in enumerate(texts):
            words = t.split()
            if long == "head" or len(words) <= budget:
                out[i] = self._vector(t)
            elif long == "head_tail":
                out[i] = self._vector(" ".join(head_tail(words, budget)))
            else:
                spans = chunk_spans(len(words), budget)
                windows = [self._vector(" ".join(words[a:b])) for a, b in spans]
                mean = np.average(windows, axis=0, weights=[b - a for a, b in spans])
                out[i] = mean / np.linalg.norm(mean)
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]
