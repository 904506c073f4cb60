"""The Classifier: an encoder, a store collection and a tuned vote rule."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .data import Example, is_blank
from .encoders.base import Encoder
from .errors import EncoderMismatchError, ExampleNotFoundError, InputError, NotTunedError, StoreError
from .metrics import score_predictions
from .store.base import CollectionMeta, Hit, Ref, Store
from .tuning import K_MAX, TuningResult, tune_rule
from .voting import Decision, Neighbour, Rule, decide

__all__ = ["Classifier", "EncoderLoader", "Prediction"]

EncoderLoader = Callable[[str], Encoder]
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Prediction:
    """A label (None when abstained), its confidence, and the neighbours as evidence."""

    label: str | None
    confidence: float
    abstained: bool
    reason: str | None
    neighbours: list[Neighbour] = field(default_factory=list)
    votes: dict[str, float] = field(default_factory=dict)

    def to_dict(self, include_neighbours: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "abstained": self.abstained,
            "reason": self.reason,
        }
        if include_neighbours:
            d["neighbours"] = [{"id": n.id, "label": n.label, "score": round(n.score, 6)} for n in self.neighbours]
        return d


def _encoder_export(source: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parity figures recorded at export and the graph a CPU encoder runs, when the dir is at hand."""
    from pathlib import Path

    from .encoders.onnx import METADATA_FILE, cpu_graph, read_metadata
    from .errors import EncoderError

    if not source or not (Path(source) / METADATA_FILE).exists():
        return None, None
    try:
        meta = read_metadata(Path(source))
    except EncoderError:
        return None, None
    return meta.get("parity"), cpu_graph(meta)


class Classifier:
    """Classify, index, tune and edit examples of one collection.

    The encoder is loaded only when text must be embedded; it must match the
    collection's stamp, so vectors of two encoders never mix.
    """

    def __init__(
        self,
        store: Store,
        collection: str = "tickets",
        encoder: Encoder | None = None,
        encoder_loader: EncoderLoader | None = None,
    ):
        self.store = store
        self.collection = collection
        self._encoder = encoder
        self._loader = encoder_loader
        self._loaded: dict[str, Encoder] = {}
        self._mu = threading.Lock()

    # --- plumbing ----------------------------------------------------------------------
    def ref(self) -> Ref:
        return self.store.ref(self.collection)

    def meta(self, ref: Ref | None = None) -> CollectionMeta:
        return self.store.get_meta(ref or self.ref())

    def exists(self) -> bool:
        return self.store.current_version(self.collection) is not None

    def encoder_for(self, meta: CollectionMeta | None) -> Encoder:
        """The encoder for `meta`'s collection version.

        A given encoder is always used (and must match the stamp). Otherwise the loader
        loads the stamped encoder once per identity, so a service follows a promote to a
        version indexed with another encoder; the last few are kept.
        """
        with self._mu:
            enc = self._encoder
            if enc is None:
                if self._loader is None:
                    raise InputError("no encoder given and no way to load one")
                key = meta.encoder if meta else ""
                enc = self._loaded.get(key)
                if enc is None:
                    enc = self._loader(meta.encoder_source if meta else "")
                    self._loaded[key] = self._loaded[enc.identity] = enc
                    while len(self._loaded) > 4:
                        self._loaded.pop(next(iter(self._loaded)))
        if meta is not None and enc.identity != meta.encoder:
            raise EncoderMismatchError(
                f"collection {self.collection!r} was indexed with encoder {meta.encoder}, "
                f"but the encoder in use is {enc.identity}; use the same encoder, or re-index into a new collection"
            )
        return enc

    # --- indexing ----------------------------------------------------------------------
    def index(
        self,
        examples: Sequence[Example],
        batch_size: int = 256,
        progress: Progress | None = None,
        optimize: bool = True,
        skip_batches: int = 0,
        on_batch: Callable[[int], None] | None = None,
        create: bool = True,
    ) -> Ref:
        """Embed and upsert; creates the collection (stamped with the encoder) if needed.

        `skip_batches` resumes after that many acknowledged batches; `on_batch(k)` runs once
        batch k is durable. With `create=False` a missing collection is an error.
        """
        if self.exists() or not create:
            ref = self.ref()
            enc = self.encoder_for(self.meta(ref))
        else:
            enc = self.encoder_for(None)
            ref = self.store.create(self.collection, CollectionMeta(enc.identity, enc.source, enc.dim))
        done = min(len(examples), skip_batches * batch_size)
        if progress and done:
            progress(done)
        for start in range(done, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            try:
                # Resume / re-import: examples already stored unchanged need no embedding.
                stored = {e.id: e for e, _ in self.store.retrieve(ref, [e.id for e in batch])}
                todo = [e for e in batch if stored.get(e.id) != e]
                if todo:
                    self.store.upsert(ref, todo, enc.embed([e.text for e in todo]))
            except StoreError as e:
                raise type(e)(
                    f"{e} — {done} of {len(examples)} examples were stored before this; "
                    "re-run the same command to resume (ids are stable, nothing is duplicated)"
                ) from None
            done += len(batch)
            if on_batch:
                on_batch(start // batch_size + 1)
            if progress:
                progress(len(batch))
        if optimize:
            self.store.optimize(ref)
        return ref

    def add(self, examples: Sequence[Example], ref: Ref | None = None) -> None:
        """Add or replace examples live (durable on return)."""
        ref = ref or self.ref()
        enc = self.encoder_for(self.meta(ref))
        self.store.upsert(ref, examples, enc.embed([e.text for e in examples]))

    def get(self, example_id: str, ref: Ref | None = None) -> Example:
        found = self.store.retrieve(ref or self.ref(), [example_id])
        if not found:
            raise ExampleNotFoundError(f"no example with id {example_id!r}")
        return found[0][0]

    def relabel(self, example_id: str, label: str, ref: Ref | None = None) -> Example:
        """Change one example's label, keeping its vector."""
        ref = ref or self.ref()
        label = label.strip()
        if is_blank(label):
            raise InputError("label must not be empty")
        found = self.store.retrieve(ref, [example_id], with_vectors=True)
        if not found:
            raise ExampleNotFoundError(f"no example with id {example_id!r}")
        old, vec = found[0]
        new = Example(old.id, old.text, label)
        assert vec is not None
        self.store.upsert(ref, [new], vec[None, :])
        return new

    def delete(self, example_id: str, ref: Ref | None = None) -> None:
        ref = ref or self.ref()
        if not self.store.retrieve(ref, [example_id]):
            raise ExampleNotFoundError(f"no example with id {example_id!r}")
        self.store.delete(ref, [example_id])

    # --- classifying -------------------------------------------------------------------
    def rule(self, meta: CollectionMeta) -> Rule:
        if not meta.rule:
            raise NotTunedError(f"collection {self.collection!r} has no tuned rule yet: run `knnclass tune`")
        return Rule.from_dict(meta.rule)

    def classify(
        self,
        texts: Sequence[str],
        rule: Rule | None = None,
        k: int | None = None,
        with_text: bool = False,
    ) -> tuple[list[Prediction], Ref, Rule]:
        """Predictions for `texts`, all against one pinned version of the collection."""
        ref = self.ref()
        meta = self.meta(ref)
        enc = self.encoder_for(meta)
        rule = rule or self.rule(meta)
        if k is not None:
            rule = Rule(rule.vote, "k", k, rule.threshold)
        return self.classify_vectors(enc.embed(texts), ref, rule, with_text), ref, rule

    def classify_vectors(self, vectors: np.ndarray, ref: Ref, rule: Rule, with_text: bool = False) -> list[Prediction]:
        n_indexed = self.store.count(ref) if rule.size == "pct" else 0
        k = min(rule.k(n_indexed), K_MAX)
        hits = self.store.search(ref, vectors, k, with_text=with_text)
        return [self._predict(h, rule, n_indexed) for h in hits]

    @staticmethod
    def _predict(hits: Sequence[Hit], rule: Rule, n_indexed: int) -> Prediction:
        nbs = [Neighbour(h.id, h.label, h.score) for h in hits]
        d: Decision = decide(nbs, rule, n_indexed)
        return Prediction(d.label, d.confidence, d.abstained, d.reason, nbs, d.votes)

    # --- tuning and evaluation ---------------------------------------------------------
    def loo_neighbours(
        self, ref: Ref, limit: int | None = None, batch_size: int = 512
    ) -> list[tuple[Example, list[Hit]]]:
        """Every stored example with its nearest neighbours, itself left out."""
        n_indexed = self.store.count(ref)
        limit = min(limit or K_MAX, max(1, n_indexed - 1)) + 1
        out: list[tuple[Example, list[Hit]]] = []
        for examples, vecs in self.store.scroll(ref, batch_size, with_vectors=True):
            assert vecs is not None
            for e, row in zip(examples, self.store.search(ref, vecs, limit), strict=True):
                out.append((e, [h for h in row if h.id != e.id][: limit - 1]))
        return out

    def tune(self, validation: Sequence[Example] | None = None, unknown_label: str | None = None) -> TuningResult:
        """Pick the rule (leave-one-out without `validation`) and stamp it on the collection."""
        ref = self.ref()
        meta = self.meta(ref)
        n_indexed = self.store.count(ref)
        if n_indexed < 2:
            raise InputError(f"collection {self.collection!r} needs at least 2 examples to tune (has {n_indexed})")
        if validation is None:
            if unknown_label is not None:
                raise InputError("--unknown-label needs --validation (indexed examples are all in scope)")
            pairs = self.loo_neighbours(ref)
            truth, hits = [e.label for e, _ in pairs], [h for _, h in pairs]
            mode = "leave-one-out"
        else:
            enc = self.encoder_for(meta)
            truth = [e.label for e in validation]
            limit = min(K_MAX, n_indexed)
            hits = self.store.search(ref, enc.embed([e.text for e in validation]), limit)
            _check_labels(truth, {h.label for row in hits for h in row}, unknown_label)
            mode = "validation"
        result = tune_rule(truth, hits, n_indexed, unknown_label, mode)
        self.store.set_meta(ref, meta.with_(rule=result.best.rule.to_dict(), tuning=result.summary()))
        return result

    def evaluate(self, examples: Sequence[Example], unknown_label: str | None = None) -> dict[str, Any]:
        preds, _, rule = self.classify([e.text for e in examples])
        seen = {n.label for p in preds for n in p.neighbours} | {p.label for p in preds if p.label}
        _check_labels([e.label for e in examples], seen, unknown_label)
        m = score_predictions([e.label for e in examples], [p.label for p in preds], unknown_label)
        ref = self.ref()
        return {
            **m,
            "vote": rule.vote,
            "size": rule.size,
            "k": rule.k(self.store.count(ref)),
            "percent": rule.value if rule.size == "pct" else None,
            "threshold": rule.threshold,
            "collection": ref.name,
            "version": ref.version,
        }

    # --- description ---------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        ref = self.ref()
        meta = self.meta(ref)
        parity, graph = _encoder_export(meta.encoder_source)
        return {
            "collection": ref.name,
            "version": ref.version,
            "versions": self.store.versions(ref.name),
            "backend": self.store.backend,
            "count": self.store.count(ref),
            "encoder": meta.encoder,
            "encoder_source": meta.encoder_source,
            "dim": meta.dim,
            "encoder_parity": parity,
            "encoder_graph": graph,
            "labels": self.store.label_counts(ref),
            "rule": meta.rule,
            "tuning": meta.tuning,
        }

    def iter_examples(self, ref: Ref | None = None) -> Iterable[Example]:
        for examples, _ in self.store.scroll(ref or self.ref()):
            yield from examples


def _check_labels(truth: Sequence[str], stored: set[str], unknown_label: str | None) -> None:
    """Refuse a labelled file that cannot be scored against the collection (a wrong column or map)."""
    if unknown_label is not None and unknown_label not in truth:
        raise InputError(f"no row is labelled with the --unknown-label {unknown_label!r}")
    in_scope = sorted(set(truth) - {unknown_label})
    if in_scope and stored and not stored & set(in_scope):
        raise InputError(
            f"none of the file's labels ({', '.join(in_scope[:3])}{', ...' if len(in_scope) > 3 else ''}) "
            f"are in the collection (e.g. {', '.join(sorted(stored)[:3])}); wrong --label-col or --label-map?"
        )
