"""The Encoder protocol: texts in, L2-normalised float32 vectors out; and what to do with
texts longer than the encoder takes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from ..errors import InputError

__all__ = ["LONG_TEXT_STRATEGIES", "Encoder", "check_long", "chunk_spans", "head_tail", "same_encoder"]

# What `embed` does with a text past `max_tokens`:
#   head       keep its start (and the final special token): what Hugging Face truncation does
#   head_tail  keep its start and its end, half the room each
#   chunk      embed overlapping windows that cover all of it, and average them
LONG_TEXT_STRATEGIES: tuple[str, ...] = ("head", "head_tail", "chunk")

T = TypeVar("T")


def same_encoder(a: str, b: str) -> bool:
    """Whether two encoder identities name the same computation.

    An identity is `NAME-QUANTISATION-HASH`, the hash taken over the exported graph, the
    tokenizer and the pooling settings; NAME is only a label (a model dir's folder name), so
    the same model exported from another folder is the same encoder.
    """
    return a == b or a.rsplit("-", 2)[1:] == b.rsplit("-", 2)[1:] != []


def check_long(long: str) -> None:
    """Raise InputError unless `long` is one of LONG_TEXT_STRATEGIES."""
    if long not in LONG_TEXT_STRATEGIES:
        raise InputError(f"long-text strategy must be one of {', '.join(LONG_TEXT_STRATEGIES)}, not {long!r}")


def head_tail(content: Sequence[T], budget: int) -> list[T]:
    """The first and the last items of `content`, `budget` in all (all of it when it fits).

    Half each, the odd one to the head: a ticket states its request up front and often
    repeats or sharpens it at the end ("so can I get a refund?"), and nothing in our data
    says one end matters more. (Sun et al. 2019 kept 1/4 head, 3/4 tail for movie reviews,
    whose verdict comes last; a support ticket is not written that way.)
    """
    if len(content) <= budget:
        return list(content)
    tail = budget // 2
    return [*content[: budget - tail], *content[len(content) - tail :]] if tail else list(content[:budget])


def chunk_spans(n: int, window: int) -> list[tuple[int, int]]:
    """(start, stop) of windows of `window` items covering `n` items, a quarter overlapping.

    Starts step by 3/4 of a window (one window where it fits); the last window may be
    shorter. A quarter of overlap gives every token some context on both sides in at least
    one window at a cost of a third more windows than none.
    """
    if n <= window:
        return [(0, n)]
    stride = max(1, window - window // 4)
    spans = []
    start = 0
    while True:
        spans.append((start, min(start + window, n)))
        if start + window >= n:
            return spans
        start += stride


@runtime_checkable
class Encoder(Protocol):
    """Anything that embeds texts. `identity` names the exact model + export settings."""

    @property
    def identity(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int: ...

    @property
    def source(self) -> str:
        """Where the encoder came from (a directory, or a name), for reopening."""
        ...

    def embed(self, texts: Sequence[str], long: str = "head") -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalised, in input order.

        `long` (one of LONG_TEXT_STRATEGIES) says what happens past `max_tokens`; a text
        within the limit gets the same vector whatever it says.
        """
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes before truncation (special tokens included)."""
        ...
