"""Several label sets in one collection: a view of one extra set as if it were the only one.

The primary set is what every collection has always had (`Example.label`, the meta's
rule / tuning / policy). An extra set keeps its labels in `Example.labels[name]` and its
rule, tuning and calibration in `CollectionMeta.sets[name]`. `SetView(store, name)` shows a
store with that set in the primary place, so tuning, reports and suspects run unchanged
on it; rows without a label of the set are left out of its scrolls and searches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .data import Example
from .errors import InputError
from .store.base import CollectionMeta, Hit, Ref, Store, Where

__all__ = ["SetView", "project_example", "project_hits", "set_meta"]

_PER_SET = ("rule", "tuning", "policy")


def project_example(e: Example, name: str) -> Example | None:
    """`e` with set `name`'s label in the primary place; None when it has none."""
    label = e.labels.get(name)
    return None if label is None else replace(e, label=label)


def project_hits(hits: Sequence[Sequence[Hit]], name: str) -> list[list[Hit]]:
    """Search results with set `name`'s labels; neighbours without one are left out."""
    return [[replace(h, label=h.labels[name]) for h in row if name in h.labels] for row in hits]


def set_meta(meta: CollectionMeta, name: str) -> CollectionMeta:
    """`meta` as a single-set collection of extra set `name` (its rule, tuning and policy; no head)."""
    d = (meta.sets or {}).get(name, {})
    extra = {k: v for k, v in meta.extra.items() if k != "head_task"}
    return meta.with_(**{k: d.get(k) for k in _PER_SET}, head=None, extra=extra, label_sets=[name], sets=None)


class SetView(Store):
    """Store `base` seen through extra label set `name` (reads projected, meta writes to the set's slot)."""

    def __init__(self, base: Store, name: str):
        self.base = base
        self.name = name
        self.backend = base.backend

    # --- forwarded ----------------------------------------------------------------------------
    def list_collections(self) -> list[str]:
        return self.base.list_collections()

    def versions(self, name: str) -> list[str]:
        return self.base.versions(name)

    def current_version(self, name: str) -> str | None:
        return self.base.current_version(name)

    def create_version(self, name: str, meta: CollectionMeta) -> Ref:
        raise InputError(f"label set {self.name!r}: create versions through the collection, not one label set")

    def switch(self, name: str, version: str) -> None:
        self.base.switch(name, version)

    def drop_version(self, ref: Ref) -> None:
        self.base.drop_version(ref)

    def delete(self, ref: Ref, ids: Sequence[str]) -> None:
        self.base.delete(ref, ids)

    def count(self, ref: Ref, where: Where | None = None) -> int:
        return self.base.count(ref, where)

    def optimize(self, ref: Ref) -> None:
        self.base.optimize(ref)

    def close(self) -> None:
        """The base store is its owner's to close."""

    def append_history(self, name: str, log: str, records: Sequence[dict[str, Any]]) -> None:
        self.base.append_history(name, log, records)

    def read_history(self, name: str, log: str) -> list[dict[str, Any]]:
        return self.base.read_history(name, log)

    def history_logs(self, name: str) -> list[str]:
        return self.base.history_logs(name)

    def drop_history(self, name: str, log: str) -> None:
        self.base.drop_history(name, log)

    # --- projected ----------------------------------------------------------------------------
    def get_meta(self, ref: Ref) -> CollectionMeta:
        return set_meta(self.base.get_meta(ref), self.name)

    def set_meta(self, ref: Ref, meta: CollectionMeta) -> None:
        base = self.base.get_meta(ref)
        sets = dict(base.sets or {})
        sets[self.name] = {k: getattr(meta, k) for k in _PER_SET}
        self.base.set_meta(ref, base.with_(sets=sets, text=meta.text))

    def upsert(self, ref: Ref, examples: Sequence[Example], vectors: np.ndarray) -> None:
        """Set `name`'s label of stored examples (text and the other sets as stored)."""
        stored = {e.id: e for e, _ in self.base.retrieve(ref, [e.id for e in examples])}
        missing = [e.id for e in examples if e.id not in stored]
        if missing:
            raise InputError(f"label set {self.name!r}: no stored example {missing[0]!r} (add it to the collection)")
        full = [replace(stored[e.id], labels={**stored[e.id].labels, self.name: e.label}) for e in examples]
        self.base.upsert(ref, full, vectors)

    def retrieve(
        self, ref: Ref, ids: Sequence[str], with_vectors: bool = False
    ) -> list[tuple[Example, np.ndarray | None]]:
        """Stored examples with the set's label ("" where they have none)."""
        return [
            (replace(e, label=e.labels.get(self.name, "")), v) for e, v in self.base.retrieve(ref, ids, with_vectors)
        ]

    def search(
        self,
        ref: Ref,
        vectors: np.ndarray,
        limit: int,
        with_text: bool = False,
        exact: bool = False,
        where: Where | None = None,
    ) -> list[list[Hit]]:
        return project_hits(self.base.search(ref, vectors, limit, with_text, exact, where), self.name)

    def scroll(
        self, ref: Ref, batch_size: int = 1024, with_vectors: bool = False, where: Where | None = None
    ) -> Iterator[tuple[list[Example], np.ndarray | None]]:
        for examples, vecs in self.base.scroll(ref, batch_size, with_vectors, where):
            keep = [i for i, e in enumerate(examples) if self.name in e.labels]
            if keep:
                out = [replace(examples[i], label=examples[i].labels[self.name]) for i in keep]
                yield out, (vecs[keep] if vecs is not None else None)
