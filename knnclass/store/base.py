"""The Store interface: versioned collections of labelled vectors, backend-neutral."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..data import Example
from ..errors import CollectionNotFoundError, InputError

__all__ = [
    "HISTORY_KEY",
    "PAYLOAD_KINDS",
    "CollectionMeta",
    "Cond",
    "Hit",
    "HnswSettings",
    "Ref",
    "Store",
    "Where",
    "infer_kind",
    "to_payload_value",
    "validate_history_log",
    "validate_meta_column",
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

    `ef` None (the default) scales the search's ef with the collection's size: recall@10 stays
    >= 0.99 against exact search (benchmarks/scale.py) where a fixed 512 costs a 10k
    collection more than an exact scan. A set `ef` is used as given (never below the limit).
    `m` and `ef_construct` apply to collection versions created afterwards.
    """

    m: int = 32
    ef_construct: int = 256
    ef: int | None = None
    quantize: bool = False  # scalar int8 copies of the vectors (embedded store)

    def __post_init__(self) -> None:
        ef_ok = self.ef is None or 1 <= self.ef <= 4096
        if not (4 <= self.m <= 128 and 4 <= self.ef_construct <= 4096 and ef_ok):
            raise InputError(f"HNSW settings out of range: m={self.m}, ef_construct={self.ef_construct}, ef={self.ef}")

    def search_ef(self, n: int, limit: int, filtered: bool = False) -> int:
        """The ef of a search for `limit` neighbours among `n` points (`filtered`: under a filter).

        Auto: 64 up to 30k points, 128 up to 300k, 512 beyond or under a filter (where the
        graph is walked past non-matching points), and at least twice the limit.
        """
        if self.ef is not None:
            return max(self.ef, limit)
        base = 512 if filtered or n > 300_000 else 128 if n > 30_000 else 64
        return max(base, 2 * limit)

    @classmethod
    def from_env(cls) -> HnswSettings:
        """Defaults overridden by KNNCLASS_HNSW_M, KNNCLASS_HNSW_EF_CONSTRUCT, KNNCLASS_HNSW_EF."""
        from ..settings import Settings

        return Settings.from_env().hnsw


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
    # The label columns, primary first (its labels are Example.label, the rule/tuning/policy above);
    # None: one set of an unrecorded name (collections indexed before label sets existed).
    label_sets: list[str] | None = None
    # Per extra label set: {"rule": ..., "tuning": ..., "policy": ...} as the fields above.
    sets: dict[str, dict[str, Any]] | None = None
    # Metadata columns and their kinds ("keyword", "number", "datetime"), payload-indexed.
    payload_schema: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CollectionMeta:
        return cls(
            **{k: d[k] for k in ("encoder", "encoder_source", "dim") if k in d},
            **{k: d[k] for k in _OPTIONAL_META if k in d},
        )

    def with_(self, **changes: Any) -> CollectionMeta:
        return replace(self, **changes)

    def set_names(self) -> list[str]:
        """The label sets, primary first ("label" names an unrecorded single set)."""
        return list(self.label_sets) if self.label_sets else ["label"]


_OPTIONAL_META = ("rule", "tuning", "head", "extra", "policy", "text", "label_sets", "sets", "payload_schema")


@dataclass(frozen=True)
class Hit:
    """A search result: the example's own id, its label, cosine similarity, maybe text;
    `labels` holds its labels of the collection's extra label sets."""

    id: str
    label: str
    score: float
    text: str | None = None
    labels: dict[str, str] = field(default_factory=dict, hash=False)


# --- metadata and filters -----------------------------------------------------------------
PAYLOAD_KINDS = ("keyword", "number", "datetime")
_OPS = ("eq", "gt", "gte", "lt", "lte")


def validate_meta_column(name: str) -> str:
    """Metadata column names become payload keys: letters, digits and '_' (max 64)."""
    import re

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name or ""):
        raise InputError(f"invalid metadata column name {name!r}: use letters, digits and '_' (max 64)")
    return name


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    try:
        f = float(str(v).strip())
    except ValueError:
        return None
    import math

    return f if math.isfinite(f) else None


def _datetime(v: Any) -> str | None:
    """`v` as an RFC 3339 UTC timestamp to the second ("2026-03-01T00:00:00Z"; no zone: UTC), or None."""
    from datetime import UTC, datetime

    text = str(v).strip()
    if len(text) < 10 or not text[:4].isdigit() or text[4] != "-":
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        return None
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")  # to the second: the strings then sort as the times do


def infer_kind(values: Sequence[Any]) -> str:
    """The payload kind of a column from its (non-empty) values: number, datetime, else keyword."""
    vals = [v for v in values if v is not None and str(v).strip() != ""]
    if vals and all(_number(v) is not None for v in vals):
        return "number"
    if vals and all(_datetime(v) is not None for v in vals):
        return "datetime"
    return "keyword"


def to_payload_value(column: str, kind: str, value: Any) -> str | float:
    """`value` as column `column` of kind `kind` stores it (numbers as floats, date/times as UTC RFC 3339)."""
    if kind == "number":
        f = _number(value)
        if f is None:
            raise InputError(f"metadata column {column!r} holds numbers; {value!r} is not one")
        return f
    if kind == "datetime":
        d = _datetime(value)
        if d is None:
            raise InputError(
                f"metadata column {column!r} holds dates/times; {value!r} is not one (use e.g. 2026-03-01 "
                "or 2026-03-01T09:30:00Z)"
            )
        return d
    if kind != "keyword":
        raise InputError(f"unknown metadata kind {kind!r} (use {', '.join(PAYLOAD_KINDS)})")
    return str(value).strip()


@dataclass(frozen=True)
class Cond:
    """One condition on a metadata column: `op` is eq, gt, gte, lt or lte; `kind` is None until resolved."""

    key: str
    op: str
    value: str | float
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise InputError(f"filter on {self.key!r}: unknown operator {self.op!r} (use {', '.join(_OPS)})")


@dataclass(frozen=True)
class Where:
    """A backend-neutral filter: every condition must hold (AND). Only matching examples are searched.

    `Where.parse(["product=cards", "created_at>=2026-03-01"])` reads the CLI form,
    `Where.from_filter({"product": "cards", "created_at": {"gte": "2026-03-01"}})` the HTTP
    form; `resolve(schema)` checks columns and types the values; `to_dict`/`from_dict`
    round-trip exactly (kinds included), for sending a filter over the wire.
    """

    conds: tuple[Cond, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "conds", tuple(self.conds))

    def __bool__(self) -> bool:
        return bool(self.conds)

    @classmethod
    def parse(cls, exprs: Sequence[str]) -> Where:
        import re

        conds = []
        for expr in exprs:
            m = re.fullmatch(r"\s*([^<>=!\s]+)\s*(>=|<=|==|=|>|<)\s*(.*?)\s*", expr)
            if not m or not m.group(3):
                raise InputError(
                    f"--where {expr!r}: use COLUMN=VALUE or COLUMN>=VALUE (also >, <, <=), e.g. product=cards"
                )
            op = {"=": "eq", "==": "eq", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}[m.group(2)]
            conds.append(Cond(m.group(1), op, m.group(3)))
        return cls(tuple(conds))

    @classmethod
    def from_filter(cls, d: dict[str, Any] | None) -> Where:
        """The HTTP form: column -> value (equality) or {op: value, ...} (ranges; eq too)."""
        if not d:
            return cls()
        conds: list[Cond] = []
        for key, v in d.items():
            if isinstance(v, dict):
                if not v:
                    raise InputError(f"filter on {key!r}: empty condition")
                conds.extend(Cond(str(key), str(op), _scalar(key, x)) for op, x in v.items())
            else:
                conds.append(Cond(str(key), "eq", _scalar(key, v)))
        return cls(tuple(conds))

    def resolve(self, schema: dict[str, str] | None) -> Where:
        """Columns checked against the collection's metadata `schema`, values typed; errors name the culprit."""
        schema = schema or {}
        out = []
        for c in self.conds:
            kind = schema.get(c.key)
            if kind is None:
                have = ", ".join(schema) or "none (index with --meta-col)"
                raise InputError(f"filter: unknown metadata column {c.key!r}; this collection has: {have}")
            if kind == "keyword" and c.op != "eq":
                raise InputError(f"filter on {c.key!r}: a keyword column takes only '=', not a range")
            try:
                value = to_payload_value(c.key, kind, c.value)
            except InputError as e:
                raise InputError(f"filter: {e}") from None
            out.append(Cond(c.key, c.op, value, kind))
        return Where(tuple(out))

    def resolved(self) -> bool:
        return all(c.kind is not None for c in self.conds)

    def to_dict(self) -> dict[str, Any]:
        return {"conds": [asdict(c) for c in self.conds]}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Where:
        return cls(tuple(Cond(**c) for c in (d or {}).get("conds", [])))

    def to_filter(self) -> dict[str, Any]:
        """The HTTP form of this filter."""
        out: dict[str, Any] = {}
        for c in self.conds:
            if c.op == "eq" and c.key not in out:
                out[c.key] = c.value
            else:
                prev = out.get(c.key)
                cur = prev if isinstance(prev, dict) else ({} if prev is None else {"eq": prev})
                cur[c.op] = c.value
                out[c.key] = cur
        return out

    def bounds(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Per column: its kind and {"match": value} or range bounds {"gte": ..., ...} (for the backends)."""
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for c in self.conds:
            kind = c.kind or "keyword"
            _, b = out.setdefault(c.key, (kind, {}))
            if c.op == "eq" and kind == "keyword":
                if "match" in b and b["match"] != c.value:
                    b["never"] = True
                b["match"] = c.value
            elif c.op == "eq":
                b["gte"] = c.value if "gte" not in b else max(b["gte"], c.value)
                b["lte"] = c.value if "lte" not in b else min(b["lte"], c.value)
            else:
                b[c.op] = c.value
        return out

    def matches(self, meta: dict[str, Any]) -> bool:
        """Whether an example's metadata satisfies every (resolved) condition."""
        for c in self.conds:
            v = meta.get(c.key)
            if v is None:
                return False
            if c.op == "eq" and v != c.value:
                return False
            if (
                (c.op == "gt" and not v > c.value)
                or (c.op == "gte" and not v >= c.value)
                or (c.op == "lt" and not v < c.value)
                or (c.op == "lte" and not v <= c.value)
            ):
                return False
        return True


def _scalar(key: Any, v: Any) -> str | float:
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise InputError(f"filter on {key!r}: the value must be a string or a number, not {type(v).__name__}")
    return v


def in_order(
    ids: Sequence[str], records: Sequence[Any], vector_of: Callable[[Any], Any] | None
) -> list[tuple[Example, np.ndarray | None]]:
    """Retrieved point records as (example, vector) in the order of `ids`; missing ids are skipped."""
    by_id = {r.payload["ext_id"]: r for r in records}
    out: list[tuple[Example, np.ndarray | None]] = []
    for i in ids:
        r = by_id.get(i)
        if r is not None:
            vec = np.asarray(vector_of(r), dtype=np.float32) if vector_of is not None else None
            out.append((Example.from_payload(r.payload, i), vec))
    return out


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
        self,
        ref: Ref,
        vectors: np.ndarray,
        limit: int,
        with_text: bool = False,
        exact: bool = False,
        where: Where | None = None,
    ) -> list[list[Hit]]:
        """Nearest stored examples for each query vector, best first; with `where`, only matching ones."""

    @abstractmethod
    def scroll(
        self, ref: Ref, batch_size: int = 1024, with_vectors: bool = False, where: Where | None = None
    ) -> Iterator[tuple[list[Example], np.ndarray | None]]: ...

    @abstractmethod
    def count(self, ref: Ref, where: Where | None = None) -> int: ...

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

    def resolve_where(self, ref: Ref, where: Where | None) -> Where | None:
        """`where` typed by `ref`'s metadata schema (already-typed filters pass as they are); None if empty."""
        if not where:
            return None
        return where if where.resolved() else where.resolve(self.get_meta(ref).payload_schema)

    def label_counts(self, ref: Ref) -> dict[str, int]:
        c: Counter[str] = Counter()
        for examples, _ in self.scroll(ref, 4096):
            c.update(e.label for e in examples)
        return dict(sorted(c.items()))

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
