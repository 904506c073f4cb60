"""What the encoder sees of a ticket: cleaning and the long-text strategy, stamped per collection.

A collection version records its `TextSettings` when it is created, so index, tune,
evaluate, classify, the service and promote all clean and shorten tickets alike. The
stored payload keeps the original text; only the vectors see the cleaned one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .cleaning import CLEAN_MODES, DEFAULT_CLEAN_MODE, clean_texts
from .data import TextSource
from .encoders.base import LONG_TEXT_STRATEGIES, Encoder, check_long
from .errors import InputError

__all__ = ["CLEAN_MODES", "LONG_TEXT_STRATEGIES", "Prepared", "TextSettings", "prepare"]


@dataclass(frozen=True)
class TextSettings:
    """`clean`: one of CLEAN_MODES ("email" by default, "none"); `long`: one of LONG_TEXT_STRATEGIES;
    `fields` / `template`: which columns of a file make the ticket text (see data.TextSource)."""

    clean: str = DEFAULT_CLEAN_MODE
    long: str = "head"
    fields: tuple[str, ...] = ("text",)
    template: str | None = None

    def __post_init__(self) -> None:
        if self.clean not in CLEAN_MODES:
            raise InputError(f"cleaning must be one of {', '.join(CLEAN_MODES)}, not {self.clean!r}")
        check_long(self.long)
        self.source()  # validates the composition

    def source(self) -> TextSource:
        """How a file's columns compose the ticket text, as stamped."""
        return TextSource(tuple(self.fields), self.template)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fields": list(self.fields)}

    @classmethod
    def from_meta(cls, d: dict[str, Any] | None) -> TextSettings:
        """The settings a version was stamped with; versions from before stamping: raw text, head."""
        if d is None:
            return cls(clean="none", long="head")
        fields = tuple(d.get("fields") or ("text",))
        return cls(d.get("clean", "none"), d.get("long", "head"), fields, d.get("template"))


@dataclass(frozen=True)
class Prepared:
    """Texts as the encoder sees them, and which ones it will shorten (past its token limit)."""

    texts: list[str]
    shortened: list[bool]


def prepare(enc: Encoder, texts: Sequence[str], settings: TextSettings) -> Prepared:
    """Clean `texts` and find those longer than the encoder takes."""
    cleaned = clean_texts(texts, settings.clean)
    counts = enc.count_tokens(cleaned) if cleaned else []
    return Prepared(cleaned, [n > enc.max_tokens for n in counts])


def embed(enc: Encoder, texts: Sequence[str], settings: TextSettings) -> np.ndarray:
    """Clean and embed with the settings' long-text strategy (the one path every caller uses)."""
    return enc.embed(clean_texts(texts, settings.clean), long=settings.long)
