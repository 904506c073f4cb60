"""Label history: every add, relabel and delete as one change set, and undo.

A change set is one command or request: an id, the time, who made it, and per example
the state before and after (label and text; the old vector too where the new state no
longer carries it, i.e. deletes and text replacements), so undo restores it exactly
without re-embedding. Change sets live in the collection's history log in the store
(`Store.append_history`), per collection rather than per version, so they survive
promote. They are written ahead: the change set is durable before the store is
written, and a write that fails appends an abort record, so history never misses a
change that landed (a crash between the two leaves a record whose examples `undo`
finds unchanged).
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .data import Example
from .errors import ChangeNotFoundError, ExampleNotFoundError, HistoryConflictError, InputError
from .store.base import Ref, Store

__all__ = [
    "Change",
    "ChangeSet",
    "change_sets",
    "commit",
    "example_history",
    "make_change",
    "undo",
]

Found = tuple[Example, np.ndarray | None]


def _vec_to_b64(v: np.ndarray) -> str:
    return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")


def _vec_from_b64(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f4").astype(np.float32)


@dataclass(frozen=True, eq=False)
class Change:
    """One example's state before and after (None: absent); `vector` is the old state's, when kept."""

    id: str
    old: Example | None
    new: Example | None
    vector: np.ndarray | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Change) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        def state(e: Example | None) -> dict[str, Any] | None:
            if e is None:
                return None
            d: dict[str, Any] = {"label": e.label, "text": e.text}
            if e.labels:
                d["labels"] = dict(e.labels)
            if e.meta:
                d["meta"] = dict(e.meta)
            return d

        d: dict[str, Any] = {"id": self.id, "old": state(self.old), "new": state(self.new)}
        if self.vector is not None:
            d["old_vector"] = _vec_to_b64(self.vector)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Change:
        def state(s: dict[str, Any] | None) -> Example | None:
            if s is None:
                return None
            return Example(d["id"], s["text"], s["label"], dict(s.get("labels") or {}), dict(s.get("meta") or {}))

        vec = _vec_from_b64(d["old_vector"]) if d.get("old_vector") else None
        return cls(d["id"], state(d.get("old")), state(d.get("new")), vec)


@dataclass(frozen=True)
class ChangeSet:
    """One command or request's changes; `undoes` names the change set an undo reverted."""

    id: str
    time: str
    who: str
    kind: str
    version: str
    changes: list[Change] = field(default_factory=list)
    undoes: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "who": self.who,
            "kind": self.kind,
            "version": self.version,
            "undoes": self.undoes,
            "changes": [c.to_dict() for c in self.changes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChangeSet:
        return cls(
            str(d["id"]),
            str(d.get("time", "")),
            str(d.get("who", "")),
            str(d.get("kind", "")),
            str(d.get("version", "")),
            [Change.from_dict(c) for c in d.get("changes", [])],
            d.get("undoes"),
        )

    def summary(self) -> dict[str, Any]:
        """The change set without texts and vectors: what `knnclass history` lists."""
        d = self.to_dict()
        del d["changes"]
        return {**d, "examples": len(self.changes)}


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def _new_id() -> str:
    """Sortable by time, unique: e.g. 20250114-093512-4f1c2a."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def make_change(example_id: str, before: Found | None, after: Example | None) -> Change | None:
    """The change from `before` (stored example and vector) to `after`; None when nothing changes.

    The old vector is kept when the new state does not carry it (a delete, or a new text).
    """
    old = before[0] if before else None
    if old == after:
        return None
    keep = before is not None and (after is None or old is None or after.text != old.text)
    return Change(example_id, old, after, before[1] if keep and before else None)


def commit(
    store: Store,
    ref: Ref,
    kind: str,
    who: str,
    changes: Sequence[Change | None],
    write: Callable[[], None],
    undoes: str | None = None,
) -> ChangeSet | None:
    """Record the change set (durably), then run `write`; a failing write is recorded as aborted.

    Without any actual change `write` still runs and nothing is recorded.
    """
    real = [c for c in changes if c is not None]
    if not real:
        write()
        return None
    cs = ChangeSet(_new_id(), _now(), who, kind, ref.version, real, undoes)
    log = store.history_log(ref)
    store.append_history(ref.name, log, [cs.to_dict()])
    try:
        write()
    except BaseException:
        # the original error matters more; if this fails too, undo finds the examples unchanged
        with contextlib.suppress(Exception):
            store.append_history(ref.name, log, [{"abort": cs.id, "time": _now()}])
        raise
    return cs


def change_sets(store: Store, name: str) -> list[ChangeSet]:
    """The collection's change sets, oldest first (aborted ones left out)."""
    records = store.read_history(name, store.history_log(store.ref(name)))
    aborted = {r["abort"] for r in records if "abort" in r}
    return [ChangeSet.from_dict(r) for r in records if "id" in r and "abort" not in r and r["id"] not in aborted]


def example_history(store: Store, name: str, example_id: str) -> list[dict[str, Any]]:
    """Every recorded change of one example, oldest first: change id, time, who, kind, old -> new."""
    out = []
    for cs in change_sets(store, name):
        for c in cs.changes:
            if c.id == example_id:
                d = c.to_dict()
                d.pop("old_vector", None)
                out.append({"change": cs.id, "time": cs.time, "who": cs.who, "kind": cs.kind, "undoes": cs.undoes, **d})
    if not out and not store.retrieve(store.ref(name), [example_id]):
        raise ExampleNotFoundError(f"no example with id {example_id!r} and no recorded history for it")
    return out


def _undone(sets: Sequence[ChangeSet]) -> set[str]:
    """Ids of change sets currently reverted: undone by an undo that is not itself undone."""
    by_id = {cs.id: cs for cs in sets}
    undone: set[str] = set()
    for cs in reversed(sets):  # newest first: an undo's own state is known before its target's
        if cs.undoes and cs.id not in undone and cs.undoes in by_id:
            undone.add(cs.undoes)
    return undone


def undo(
    store: Store,
    name: str,
    change_id: str | None = None,
    force: bool = False,
    who: str = "library",
    embed: Callable[[list[str]], np.ndarray] | None = None,
) -> ChangeSet:
    """Revert change set `change_id` (default: the newest one not undone yet) exactly.

    Refused when any of its examples changed since, unless `force` (then those are set back
    too; an old text whose vector was not kept is re-embedded with `embed`). The undo is
    recorded as a change set of its own, so undoing it redoes the change.
    """
    ref = store.ref(name)
    sets = change_sets(store, name)
    undone = _undone(sets)
    if change_id is None:
        todo = [cs for cs in sets if cs.kind != "undo" and cs.id not in undone]
        if not todo:
            raise ChangeNotFoundError(f"collection {name!r} has no recorded change left to undo")
        target = todo[-1]
    else:
        found = [cs for cs in sets if cs.id == change_id]
        if not found:
            raise ChangeNotFoundError(f"no change set {change_id!r} in the history of {name!r}")
        target = found[0]
        if target.id in undone and not force:
            by = next(cs.id for cs in reversed(sets) if cs.undoes == target.id)
            raise HistoryConflictError(f"change set {target.id} was already undone by {by}; undo {by} to redo it")
    ids = [c.id for c in target.changes]
    current = {e.id: (e, v) for e, v in store.retrieve(ref, ids, with_vectors=True)}
    stale = [c for c in target.changes if (current[c.id][0] if c.id in current else None) != c.new]
    if stale and not force:
        c = stale[0]
        now = current.get(c.id)
        state = f"now labelled {now[0].label!r}" if now else "now deleted"
        left = f"{c.new.label!r}" if c.new else "deleted"
        raise HistoryConflictError(
            f"{len(stale)} of {len(ids)} examples of change set {target.id} changed since (first: {c.id!r} is "
            f"{state}; the change left it {left}); undo the later changes first, or force the undo"
        )
    upserts: list[Example] = []
    vectors: list[np.ndarray | None] = []
    deletes: list[str] = []
    changes: list[Change | None] = []
    for c in reversed(target.changes):
        before = current.get(c.id)
        changes.append(make_change(c.id, before, c.old))
        if c.old is None:
            if before is not None:
                deletes.append(c.id)
            continue
        if c.vector is not None:
            vec: np.ndarray | None = c.vector
        elif before is not None and before[0].text == c.old.text:
            vec = before[1]
        else:
            vec = None  # forced over a later text change: the old text's vector was not kept
        upserts.append(c.old)
        vectors.append(vec)
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing:
        if embed is None:
            raise InputError(f"cannot restore the old text of {upserts[missing[0]].id!r} without an encoder")
        fresh = embed([upserts[i].text for i in missing])
        for i, v in zip(missing, fresh, strict=True):
            vectors[i] = v

    def write() -> None:
        if upserts:
            store.upsert(ref, upserts, np.stack([v for v in vectors if v is not None]).astype(np.float32))
        if deletes:
            store.delete(ref, deletes)

    cs = commit(store, ref, "undo", who, changes, write, undoes=target.id)
    if cs is None:  # forced over examples already back in their old state: record the undo anyway
        cs = ChangeSet(_new_id(), _now(), who, "undo", ref.version, [], target.id)
        store.append_history(name, store.history_log(ref), [cs.to_dict()])
    return cs
