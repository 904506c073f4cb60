"""The Store interface: versioned collections of labelled vectors, backend-neutral."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..data import Example
from ..errors import CollectionNotFoundError, InputError

__all__ = [
    "HISTORY_KEY",
    "CollectionMeta",
    "Hit",
    "HnswSettings",
    "Ref",
    "Store",
    "validate_history_log",
    "validate_name",
]

HISTORY_KEY = "history"
"""The CollectionMeta.extra key naming the history log a version's collection writes to ("" = the default log)."""


def validate_name(name: str) -> str:
    """Collection names: letters, digits, '-', '_' and '.', 1-64 chars."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name or ""):
        raise InputError(f"invalid collection name {name!r}: use letters, digits, '-', '_', '.' (max 64)")
    return name


def validate_history_log(log: str) -> str:
    """History log names: "" (the collection's default log) or 1-40 lowercase letters and digits."""
    import re

    if log and not re.fullmatch(r"[a-z0-9]{1,40}", log):
        raise InputError(f"invalid history log name {log!r}")
    return log


@dataclass(frozen=True)
class HnswSettings:
    """HNSW graph and search settings, the same for both backends.

    The defaults hold recall@10 >= 0.99 against exact search at 1M vectors with a query
    p99 of a few ms (benchmarks/scale.py); `ef` may be raised at query time, `m` and
    `ef_construct` apply to collection versions created afterwards.
    """

    m: int = 32
    ef_construct: int = 256
    ef: int = 512
    quantize: bool = False  # scalar int8 copies of the vectors (embedded store)

    def __post_init__(self) -> None:
        if not (4 <= self.m <= 128 and 4 <= self.ef_construct <= 4096 and 1 <= self.ef <= 4096):
            raise InputError(f"HNSW settings out of range: m={self.m}, ef_construct={self.ef_construct}, ef={self.ef}")

    @classmethod
    def from_env(cls) -> HnswSettings:
        """Defaults overridden by KNNCLASS_HNSW_M, KNNCLASS_HNSW_EF_CONSTRUCT, KNNCLASS_HNSW_EF."""
        import os

        d = cls()
        try:
            return cls(
                m=int(os.environ.get("KNNCLASS_HNSW_M", d.m)),
                ef_construct=int(os.environ.get("KNNCLASS_HNSW_EF_CONSTRUCT", d.ef_construct)),
                ef=int(os.environ.get("KNNCLASS_HNSW_EF", d.ef)),
            )
        except ValueError as e:
            raise InputError(f"KNNCLASS_HNSW_*: not an integer ({e})") from None


@dataclass(frozen=True)
class Ref:
    """One version of a collection, pinned: every operation of a request uses one Ref."""

    name: str
    version: str


@dataclass(frozen=True)
class CollectionMeta:
    """What a collection version carries: the encoder stamp, the tuned rule and its calibration."""

    encoder: str
    encoder_source: str
    dim: int
    rule: dict[str, Any] | None = None
    tuning: dict[str, Any] | None = None
    head: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] | None = None  # knnclass.policy.Policy.to_dict(): calibration + familiarity
    text: dict[str, Any] | None = None  # knnclass.text.TextSettings: cleaning + long-text strategy

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CollectionMeta:
        return cls(
            **{k: d[k] for k in ("encoder", "encoder_source", "dim") if k in d},
            **{k: d[k] for k in ("rule", "tuning", "head", "extra", "policy", "text") if k in d},
        )

    def with_(self, **changes: Any) -> CollectionMeta:
        return replace(self, **changes)


@dataclass(frozen=True)
class Hit:
    """A search result: the example's own id, its label, cosine similarity, maybe text."""

    id: str
    label: str
    score: float
    text: str | None = None


class Store(ABC):
    """Versioned collections: `name` points at one version; promote builds the next."""

    backend: str = "abstract"

    # --- collections and versions -------------------------------------------------
    @abstractmethod
    def list_collections(self) -> list[str]: ...

    @abstractmethod
    def versions(self, name: str) -> list[str]: ...

    @abstractmethod
    def current_version(self, name: str) -> str | None: ...

    @abstractmethod
    def create_version(self, name: str, meta: CollectionMeta) -> Ref:
        """A new empty version (v1, v2, ...); it becomes current only on `switch`."""

    @abstractmethod
    def switch(self, name: str, version: str) -> None:
        """Atomically make `version` the one `name` resolves to."""

    @abstractmethod
    def drop_version(self, ref: Ref) -> None: ...

    @abstractmethod
    def get_meta(self, ref: Ref) -> CollectionMeta: ...

    @abstractmethod
    def set_meta(self, ref: Ref, meta: CollectionMeta) -> None: ...

    # --- data ------------------------------------------------------------------------
    @abstractmethod
    def upsert(self, ref: Ref, examples: Sequence[Example], vectors: np.ndarray) -> None:
        """Durable when it returns."""

    @abstractmethod
    def delete(self, ref: Ref, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def retrieve(
        self, ref: Ref, ids: Sequence[str], with_vectors: bool = False
    ) -> list[tuple[Example, np.ndarray | None]]:
        """Stored examples for the ids that exist, in the order asked."""

    @abstractmethod
    def search(
        self, ref: Ref, vectors: np.ndarray, limit: int, with_text: bool = False, exact: bool = False
    ) -> list[list[Hit]]:
        """Nearest stored examples for each query vector, best first."""

    @abstractmethod
    def scroll(
        self, ref: Ref, batch_size: int = 1024, with_vectors: bool = False
    ) -> Iterator[tuple[list[Example], np.ndarray | None]]: ...

    @abstractmethod
    def count(self, ref: Ref) -> int: ...

    @abstractmethod
    def optimize(self, ref: Ref) -> None:
        """Build the vector index (HNSW) now rather than on the next query."""

    @abstractmethod
    def close(self) -> None: ...

    # --- history (knnclass.history): per collection, not per version, so it survives promote ----
    @abstractmethod
    def append_history(self, name: str, log: str, records: Sequence[dict[str, Any]]) -> None:
        """Append JSON-serialisable records (one change set each) to log `log` of `name`; durable on return."""

    @abstractmethod
    def read_history(self, name: str, log: str) -> list[dict[str, Any]]:
        """The records of log `log` of `name`, oldest first; a record torn by a crash mid-append is skipped."""

    @abstractmethod
    def history_logs(self, name: str) -> list[str]:
        """The names of the history logs `name` has (a restore or copy writes a fresh one)."""

    @abstractmethod
    def drop_history(self, name: str, log: str) -> None: ...

    # --- derived ---------------------------------------------------------------------
    def create(self, name: str, meta: CollectionMeta) -> Ref:
        """A new collection with its first version, made current."""
        validate_name(name)
        ref = self.create_version(name, meta)
        self.switch(name, ref.version)
        return ref

    def ref(self, name: str, version: str | None = None) -> Ref:
        """Pin `name` to its current version (or to `version`)."""
        validate_name(name)
        if version is None:
            version = self.current_version(name)
            if version is None:
                have = ", ".join(self.list_collections()) or "none"
                raise CollectionNotFoundError(f"no collection {name!r} in this store (collections: {have})")
        elif version not in self.versions(name):
            raise CollectionNotFoundError(f"collection {name!r} has no version {version!r}")
        return Ref(name, version)

    def history_log(self, ref: Ref) -> str:
        """The history log of `ref`'s collection: named in the version's meta, so switching the
        version (a restore) switches the history with it in the same atomic step."""
        return validate_history_log(str(self.get_meta(ref).extra.get(HISTORY_KEY, "")))

    def label_counts(self, ref: Ref) -> dict[str, int]:
        c: Counter[str] = Counter()
        for examples, _ in self.scroll(ref, 4096):
            c.update(e.label for e in examples)
        return dict(sorted(c.items()))

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
