"""Promote a fine-tuning run into a collection: re-embed, re-tune, switch atomically.

The stored examples' texts are re-embedded with the run's encoder into a new version of
the collection (readers keep using the old one meanwhile), the vote rule is re-tuned,
and only then is the collection switched to the new version in one atomic step. Old
versions stay until `prune`, so `rollback` is a pointer swap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from ..classifier import Classifier
from ..data import Example, read_examples
from ..encoders.base import Encoder
from ..errors import InputError
from ..store.base import CollectionMeta, Ref, Store
from ..text import TextSettings
from ..text import embed as embed_text
from ..tuning import BLENDS, TuningResult
from .finetune import read_run
from .head import HEADS_FILE, load_heads

__all__ = ["SERVED", "PruneResult", "promote", "prune", "rollback", "run_encoder_dir"]

Progress = Callable[[int], None]
SERVED = ("auto", "knn", "head", "ensemble")
"""What promote can serve: validation's choice, the vote, the run's head, or their blend."""


def run_encoder_dir(run_dir: str | Path) -> Path:
    """The run's exported (ONNX) encoder dir; exports the tuned ST model first if needed."""
    from ..encoders.onnx import METADATA_FILE

    run_dir = Path(run_dir)
    run = read_run(run_dir)
    if not run.get("encoder_tuned"):
        return Path(run["encoder"])
    out = run_dir / "encoder"
    if not (out / METADATA_FILE).exists():
        from ..encoders.export import ExportSettings, export_encoder

        export_encoder(
            run_dir / "encoder-st", out, ExportSettings(), name=f"ft-{run['strategy']}-{run_dir.resolve().name}"
        )
    return out


def _validation_for(run_dir: Path, labels: set[str], name: str | None = None) -> tuple[str, list[Example]] | None:
    """The run's validation examples for a label set of the collection: the run's task of the
    set's `name` when it has one, else the task whose labels overlap the set's most (half at least).
    Rows whose label the set does not hold are left out."""
    path = run_dir / "validation.csv"
    if not path.exists():
        return None
    tasks = list(read_run(run_dir).get("tasks", []))
    if name in tasks:
        tasks = [name]
    best: tuple[str, list[Example]] | None = None
    best_overlap = 0.0
    for task in tasks:
        exs = [e for e in read_examples(path, "text", task) if e.label in labels]
        overlap = len({e.label for e in exs}) / max(1, len(labels))
        if overlap > best_overlap:
            best, best_overlap = (task, exs), overlap
    return best if best_overlap >= 0.5 else None


def promote(
    store: Store,
    collection: str,
    run_dir: str | Path,
    encoder: Encoder | None = None,
    batch_size: int = 256,
    progress: Progress | None = None,
    serve: str = "auto",
) -> dict[str, Any]:
    """Reindex `collection`'s stored examples with the run's encoder into a new version,
    re-tune the vote rule, pick what serves by validation, then switch.

    `serve`: "knn" (the vote), "head" (the run's head), "ensemble" (the head blended with
    the vote) or "auto" (whichever validation scores best). `encoder` overrides loading the
    run's encoder (tests). Returns what was done; on any failure the new version is dropped
    and nothing switches.
    """
    if serve not in SERVED:
        raise InputError(f"serve must be one of {', '.join(SERVED)}, not {serve!r}")
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    if encoder is None:
        from ..encoders import load_encoder

        encoder = load_encoder(run_encoder_dir(run_dir))
    old = store.ref(collection)
    old_meta = store.get_meta(old)
    n_old = store.count(old)
    if n_old < 2:
        raise InputError(f"collection {collection!r} holds {n_old} example(s); nothing to promote")
    extra = {**old_meta.extra, "run": str(run_dir.resolve()), "strategy": run.get("strategy"), "previous": old.version}
    # the new version keeps what the collection is (text, label sets, metadata columns), not what was tuned
    meta = CollectionMeta(
        encoder.identity,
        encoder.source,
        encoder.dim,
        extra=extra,
        text=old_meta.text,
        label_sets=old_meta.label_sets,
        payload_schema=old_meta.payload_schema,
    )
    new = store.create_version(collection, meta)
    text = TextSettings.from_meta(old_meta.text)  # the new version cleans and shortens as the old one did
    try:
        names = old_meta.set_names()
        labels: dict[str, set[str]] = {name: set() for name in names}
        for examples, _ in store.scroll(old, batch_size):
            store.upsert(new, examples, embed_text(encoder, [e.text for e in examples], text))
            for e in examples:
                labels[names[0]].add(e.label)
                for name, lab in e.labels.items():
                    labels.setdefault(name, set()).add(lab)
            if progress:
                progress(len(examples))
        store.optimize(new)
        n = store.count(new)
        if n != n_old:
            raise InputError(f"reindexed {n} of {n_old} examples; the old version changed while promoting? retry")
        tuned, head_info = _retune(store, new, encoder, run_dir, names[0], labels[names[0]], serve)
        if serve in ("head", "ensemble") and head_info is None:
            raise InputError(
                f"{run_dir}: no head to serve (rule {serve}): the run has none whose labels cover the collection's"
            )
        changes: dict[str, Any] = {}
        if head_info and head_info["serve"]:
            extra = {**store.get_meta(new).extra, "head_task": head_info["task"]}
            changes = {"head": str((run_dir / HEADS_FILE).resolve()), "extra": extra}
        clf = Classifier(store, collection, encoder=encoder)
        clf.stamp(new, tuned, **changes)
        sets = {name: _retune_set(clf, new, run_dir, name, labels[name]) for name in names[1:]}
        store.switch(collection, new.version)
    except BaseException:
        store.drop_version(new)
        raise
    return {
        "collection": collection,
        "from": old.version,
        "to": new.version,
        "count": n,
        "encoder": encoder.identity,
        "rule": tuned.best.rule.to_dict(),
        "tuning": tuned.summary(),
        "label_sets": {names[0]: tuned.summary(), **sets},
        "head": head_info,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _retune_set(clf: Classifier, ref: Ref, run_dir: Path, name: str, labels: set[str]) -> dict[str, Any]:
    """Re-tune extra label set `name` of version `ref` (on the run's task for it, if any) and stamp it."""
    view = clf.for_set(name, clf.meta(ref))
    val = _validation_for(run_dir, labels, name)
    tuned = view.tune_version(ref, val[1] if val else None)
    view.stamp(ref, tuned)
    return tuned.summary()


_SHARES = {"head": (1.0,), "ensemble": BLENDS, "auto": (*BLENDS, 1.0)}


def _retune(
    store: Store, ref: Ref, encoder: Encoder, run_dir: Path, name: str, labels: set[str], serve: str
) -> tuple[TuningResult, dict[str, Any] | None]:
    """Rule and calibration on the run's validation split (leave-one-out without one); the
    vote, the head or their blend, as `serve` says or validation prefers."""
    clf = Classifier(store, ref.name, encoder=encoder)
    val = _validation_for(run_dir, labels, name)
    if val is None:
        return clf.tune_version(ref, None), None
    task, exs = val
    rows = clf.tuning_rows(ref, exs)  # searched once, scored with and without the head
    tuned = rows.tune()
    heads_path = run_dir / HEADS_FILE
    if serve == "knn" or not heads_path.exists():
        return tuned, None
    heads = load_heads(heads_path)
    if task not in heads or not labels <= set(heads[task].labels):
        return tuned, None
    # the head's answers (blended with the vote where a share below 1 scores best), calibrated on the same rows
    with_head = rows.tune(head=heads[task], blends=_SHARES[serve])
    share = with_head.best.rule.blend
    use = with_head.best.score > tuned.best.score if serve == "auto" else True
    head_acc = with_head.blends.get(1.0)
    ensemble_acc = max((a for w, a in with_head.blends.items() if w < 1), default=None)
    info = {
        "task": task,
        "knn_accuracy": round(tuned.best.score, 5),
        "head_accuracy": None if head_acc is None else round(head_acc, 5),
        "ensemble_accuracy": None if ensemble_acc is None else round(ensemble_acc, 5),
        "head_share": share,
        "served": ("ensemble" if share < 1 else "head") if use else "knn",
        "serve": use,
    }
    return (with_head if use else tuned), info


def rollback(store: Store, collection: str) -> dict[str, str]:
    """Switch back to the version the current one replaced (recorded by promote).

    Without that record (or if it was pruned): the newest older version that was tuned, so
    a half-built version left by a killed promote is never switched to.
    """
    cur = store.current_version(collection)
    if cur is None:
        store.ref(collection)  # raises the not-found error
        raise AssertionError("unreachable")
    versions = store.versions(collection)
    previous = store.get_meta(Ref(collection, cur)).extra.get("previous")
    if previous in versions and previous != cur:
        target = str(previous)
    else:
        older = [
            v for v in versions if int(v[1:]) < int(cur[1:]) and store.get_meta(Ref(collection, v)).rule is not None
        ]
        if not older:
            raise InputError(f"collection {collection!r} has no finished version before {cur} to roll back to")
        target = older[-1]
    store.switch(collection, target)
    return {"collection": collection, "from": cur, "to": target}


class PruneResult(TypedDict):
    """What `prune` did: the versions dropped and the older ones kept beside the current one."""

    collection: str
    current: str | None
    dropped: list[str]
    kept: list[str]


def prune(store: Store, collection: str, keep: int = 0) -> PruneResult:
    """Drop every version but the current one and the `keep` newest others."""
    cur = store.current_version(collection)
    if cur is None:
        store.ref(collection)
    others = [v for v in store.versions(collection) if v != cur]
    drop = others[: max(0, len(others) - keep)]
    for v in drop:
        store.drop_version(Ref(collection, v))
    return {"collection": collection, "current": cur, "dropped": drop, "kept": others[len(drop) :]}
