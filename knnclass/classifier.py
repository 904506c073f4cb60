"""The Classifier: an encoder, a store collection and a tuned vote rule."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import history
from .cleaning import clean_texts
from .data import Example, TextSource, is_blank
from .encoders.base import LONG_TEXT_STRATEGIES, Encoder, same_encoder
from .errors import (
    EncoderMismatchError,
    ExampleNotFoundError,
    InputError,
    KnnclassError,
    NotTunedError,
    StoreError,
)
from .metrics import evaluation_metrics
from .policy import Novelty, Policy, fit_novelty, head_columns, reasons, score_rows, typical_similarity
from .store.base import CollectionMeta, Hit, Ref, Store, Where, infer_kind, to_payload_value, validate_meta_column
from .text import Prepared, TextSettings, prepare
from .text import embed as embed_text
from .tuning import BLENDS, K_MAX, LOO_ROWS, Objective, TuningResult, hits_to_arrays, tune_rule
from .voting import Neighbour, Rule

if TYPE_CHECKING:
    from .jobs.head import Head
    from .settings import Settings

__all__ = [
    "BatchTimings",
    "Classifier",
    "ClassifyRequest",
    "ClassifyResult",
    "EncoderLoader",
    "Prediction",
    "encoder_loader",
    "open_classifier",
]

EncoderLoader = Callable[[str], Encoder]
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Prediction:
    """An answer with its evidence.

    `label` is None when abstained (`reason`: unknown, low_confidence, tie, no_neighbours);
    `suggestion` is the best guess either way and `confidence` the probability that it is
    right (calibrated when the collection was tuned with a policy, else the vote share).
    `familiarity` says how much the ticket looks like the indexed ones; `alternatives` are
    the next labels with their probabilities; `source` is "knn", "head" or "ensemble" (the
    head blended with the vote); `shortened` says the (cleaned) text was past the encoder's
    token limit, so the long-text strategy applied.
    """

    label: str | None
    confidence: float
    abstained: bool
    reason: str | None
    neighbours: list[Neighbour] = field(default_factory=list)
    suggestion: str | None = None
    familiarity: float | None = None
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    source: str = "knn"
    shortened: bool = False
    sets: dict[str, Prediction] = field(default_factory=dict)  # every label set's answer (several sets only)

    def to_dict(self, include_neighbours: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "abstained": self.abstained,
            "reason": self.reason,
            "suggestion": self.suggestion,
            "familiarity": None if self.familiarity is None else round(self.familiarity, 6),
            "alternatives": [{"label": lab, "confidence": round(p, 6)} for lab, p in self.alternatives],
            "source": self.source,
            "shortened": self.shortened,
        }
        if include_neighbours:
            d["neighbours"] = [{"id": n.id, "label": n.label, "score": round(n.score, 6)} for n in self.neighbours]
        if self.sets:
            d["labels"] = {name: p.to_dict(include_neighbours) for name, p in self.sets.items()}
        return d


@dataclass(frozen=True)
class ClassifyRequest:
    """One caller's texts (or `fields`, composed as the collection was indexed) and overrides;
    `truncate=False` refuses texts over the token limit."""

    texts: Sequence[str]
    rule: Rule | None = None
    k: int | None = None
    truncate: bool = True
    fields: Sequence[Mapping[str, str]] = ()
    where: Where | None = None  # only matching neighbours vote


@dataclass(frozen=True)
class ClassifyResult:
    """Predictions for one request, with the pinned version, rule and encoder that made them."""

    predictions: list[Prediction]
    ref: Ref
    rule: Rule
    encoder: str


@dataclass
class BatchTimings:
    encode_s: float = 0.0
    search_s: float = 0.0
    texts: int = 0


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


@dataclass(frozen=True)
class TuningRows:
    """A version's tuning rows, searched once (`Classifier.tuning_rows`); `tune` scores them."""

    truth: list[str]
    hits: list[list[Hit]]
    n_indexed: int
    unknown_label: str | None
    mode: str
    typical: tuple[dict[str, float], float]
    vectors: np.ndarray | None  # the rows' own vectors, when searched with them
    novelty: Novelty | None

    def tune(
        self, objective: Objective | None = None, head: Head | None = None, blends: Sequence[float] = (1.0,)
    ) -> TuningResult:
        """The best rule for these rows; with `head` (and the rows' vectors) its answers too."""
        head_rows = None
        if head is not None and self.vectors is not None:
            head_rows = (head.labels, head.probabilities(self.vectors))
        rows = self.vectors if self.novelty is not None else None
        return tune_rule(
            self.truth, self.hits, self.n_indexed, self.unknown_label, self.mode, self.typical,
            objective, head_rows, self.novelty, rows, blends,
        )  # fmt: skip


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
    def sibling(self, collection: str) -> Classifier:
        """A classifier of another collection of the same store, sharing the loaded encoders."""
        other = Classifier(self.store, collection, self._encoder, self._loader)
        other._loaded, other._mu = self._loaded, self._mu
        return other

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
        if meta is not None and not same_encoder(enc.identity, meta.encoder):
            raise EncoderMismatchError(
                f"collection {self.collection!r} was indexed with encoder {meta.encoder}, "
                f"but the encoder in use is {enc.identity}; use the same encoder, or re-index into a new collection"
            )
        return enc

    def embed_texts(self, texts: Sequence[str], ref: Ref | None = None) -> np.ndarray:
        """Vectors of `texts` as version `ref` embeds them: its encoder, cleaning and long-text strategy."""
        meta = self.meta(ref or self.ref())
        return embed_text(self.encoder_for(meta), texts, TextSettings.from_meta(meta.text))

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
        text: TextSettings | None = None,
        label_sets: Sequence[str] | None = None,
    ) -> Ref:
        """Embed and upsert; creates the collection (stamped with the encoder) if needed.

        `skip_batches` resumes after that many acknowledged batches; `on_batch(k)` runs once
        batch k is durable. With `create=False` a missing collection is an error. `text` (cleaning,
        long-text strategy) is stamped on a new collection; for an existing one it must match.
        `label_sets` (label column names, primary first) likewise. The examples' metadata is typed
        per column (number, datetime, else keyword; a column's kind is stamped once) and indexed.
        """
        if self.exists() or not create:
            ref = self.ref()
            meta = self.meta(ref)
            enc = self.encoder_for(meta)
            stamped = TextSettings.from_meta(meta.text)
            if text is not None and text != stamped:
                raise InputError(
                    f"collection {self.collection!r} cleans with {stamped.clean!r} and shortens long texts by "
                    f"{stamped.long!r}; index into a new collection to use {text.clean!r} / {text.long!r}"
                )
            have = meta.label_sets or ([label_sets[0]] if label_sets else None)
            if label_sets is not None and have is not None and list(label_sets) != list(have):
                raise InputError(
                    f"collection {self.collection!r} has the label sets {', '.join(have)}, not "
                    f"{', '.join(label_sets)}; index into a new collection for other label columns"
                )
        else:
            enc = self.encoder_for(None)
            settings = (text or TextSettings()).to_dict()
            meta = CollectionMeta(
                enc.identity, enc.source, enc.dim, text=settings, label_sets=list(label_sets) if label_sets else None
            )
            ref = self.store.create(self.collection, meta)
        extra = set(meta.set_names()[1:])
        stray = sorted({s for e in examples for s in e.labels} - extra)
        if stray:
            raise InputError(f"examples carry labels of {stray[0]!r}, not a label set of {self.collection!r}")
        schema = payload_schema(examples, meta.payload_schema)
        if schema != (meta.payload_schema or {}):
            meta = meta.with_(payload_schema=schema)
            self.store.set_meta(ref, meta)
        examples = typed_metadata(examples, schema)
        settings_ = TextSettings.from_meta(meta.text)
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
                    self.store.upsert(ref, todo, embed_text(enc, [e.text for e in todo], settings_))
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

    def add(
        self, examples: Sequence[Example], ref: Ref | None = None, truncate: bool = True, who: str = "library"
    ) -> None:
        """Add or replace examples live (durable on return); `truncate=False` refuses over-long texts.

        Recorded in the label history as one change set by `who`.
        """
        ref = ref or self.ref()
        meta = self.meta(ref)
        enc = self.encoder_for(meta)
        schema = payload_schema(examples, meta.payload_schema)
        if schema != (meta.payload_schema or {}):
            self.store.set_meta(ref, meta.with_(payload_schema=schema))
        examples = typed_metadata(examples, schema)
        settings = TextSettings.from_meta(meta.text)
        seen = prepare(enc, [e.text for e in examples], settings)
        if not truncate:
            self.check_length(enc, seen, [f"example {e.id!r}" for e in examples])
        vectors = enc.embed(seen.texts, long=settings.long)
        before = {e.id: (e, v) for e, v in self.store.retrieve(ref, list({e.id: 0 for e in examples}), True)}
        last = {e.id: e for e in examples}  # a repeated id: the last one is what stays stored
        changes = [history.make_change(i, before.get(i), e) for i, e in last.items()]
        history.commit(self.store, ref, "add", who, changes, lambda: self.store.upsert(ref, examples, vectors))

    def get(self, example_id: str, ref: Ref | None = None) -> Example:
        found = self.store.retrieve(ref or self.ref(), [example_id])
        if not found:
            raise ExampleNotFoundError(f"no example with id {example_id!r}")
        return found[0][0]

    def relabel(
        self,
        example_id: str,
        label: str,
        ref: Ref | None = None,
        who: str = "library",
        label_set: str | None = None,
    ) -> Example:
        """Change one example's label (of `label_set`, default the primary set), keeping its vector."""
        return self.relabel_many([(example_id, label)], ref, who, label_set)[0]

    def relabel_many(
        self,
        pairs: Sequence[tuple[str, str]],
        ref: Ref | None = None,
        who: str = "library",
        label_set: str | None = None,
    ) -> list[Example]:
        """Change several examples' labels (vectors kept) as one change set in the history; all ids checked first.

        `label_set` names the set to change (default: the primary one)."""
        from .labelsets import SetView

        if isinstance(self.store, SetView):  # the history records whole examples, so relabel on the base
            base = Classifier(self.store.base, self.collection, self._encoder, self._loader)
            return base.relabel_many(pairs, ref, who, label_set or self.store.name)
        ref = ref or self.ref()
        names = self.meta(ref).set_names()
        if label_set is not None and label_set not in names:
            raise InputError(f"no label set {label_set!r}; this collection has: {', '.join(names)}")
        extra = label_set if label_set is not None and label_set != names[0] else None
        labels = [(i, lab.strip()) for i, lab in pairs]
        if any(is_blank(lab) for _, lab in labels):
            raise InputError("label must not be empty")
        found = {e.id: (e, v) for e, v in self.store.retrieve(ref, list({i: 0 for i, _ in labels}), True)}
        missing = [i for i, _ in labels if i not in found]
        if missing:
            raise ExampleNotFoundError(f"no example with id {missing[0]!r}")
        new = {
            i: replace(found[i][0], labels={**found[i][0].labels, extra: lab})
            if extra
            else replace(found[i][0], label=lab)
            for i, lab in labels
        }
        vecs = np.stack([v for _, v in (found[i] for i in new) if v is not None]) if new else None
        changes = [history.make_change(i, found[i], e) for i, e in new.items()]

        def write() -> None:
            for start in range(0, len(new), 256):
                chunk = list(new.values())[start : start + 256]
                assert vecs is not None
                self.store.upsert(ref, chunk, vecs[start : start + 256])

        history.commit(self.store, ref, "relabel", who, changes, write)
        return [new[i] for i, _ in labels]

    def delete(self, example_id: str, ref: Ref | None = None, who: str = "library") -> None:
        """Delete one example; the history keeps it (with its vector), so undo restores it exactly."""
        ref = ref or self.ref()
        found = self.store.retrieve(ref, [example_id], with_vectors=True)
        if not found:
            raise ExampleNotFoundError(f"no example with id {example_id!r}")
        change = history.make_change(example_id, found[0], None)
        history.commit(self.store, ref, "delete", who, [change], lambda: self.store.delete(ref, [example_id]))

    # --- label sets ------------------------------------------------------------------------
    def for_set(self, name: str | None, meta: CollectionMeta | None = None) -> Classifier:
        """This classifier seen through label set `name` (itself for the primary set or None)."""
        names = (meta or self.meta()).set_names()
        if name is None or name == names[0]:
            return self
        if name not in names:
            raise InputError(f"no label set {name!r}; this collection has: {', '.join(names)}")
        from .labelsets import SetView

        view = Classifier(SetView(self.store, name), self.collection, self._encoder, self._loader)
        view._loaded = self._loaded
        return view

    # --- classifying -------------------------------------------------------------------
    def rule(self, meta: CollectionMeta) -> Rule:
        if not meta.rule:
            raise NotTunedError(f"collection {self.collection!r} has no tuned rule yet: run `knnclass tune`")
        return Rule.from_dict(meta.rule)

    def set_rules(self, meta: CollectionMeta, override: Rule | None = None, k: int | None = None) -> dict[str, Rule]:
        """The rule of every extra label set (`override` for all when given), with `k` applied."""
        out = {}
        for name in meta.set_names()[1:]:
            if override is not None:
                out[name] = override.with_k(k)
                continue
            d = (meta.sets or {}).get(name) or {}
            if not d.get("rule"):
                raise NotTunedError(
                    f"label set {name!r} of {self.collection!r} has no tuned rule yet: run `knnclass tune`"
                )
            out[name] = Rule.from_dict(d["rule"]).with_k(k)
        return out

    def classify(
        self,
        texts: Sequence[str],
        rule: Rule | None = None,
        k: int | None = None,
        with_text: bool = False,
        truncate: bool = True,
        where: Where | None = None,
    ) -> tuple[list[Prediction], Ref, Rule]:
        """Predictions for `texts`, all against one pinned version of the collection; with `where`,
        only neighbours whose metadata match vote."""
        request = ClassifyRequest(texts, rule, k, truncate, where=where)
        result = self.classify_batch([request], with_text=with_text)[0]
        if isinstance(result, Exception):
            raise result
        return result.predictions, result.ref, result.rule

    def classify_batch(
        self, requests: Sequence[ClassifyRequest], with_text: bool = False, timings: BatchTimings | None = None
    ) -> list[ClassifyResult | KnnclassError]:
        """Several callers' requests in one encoder batch, against one pinned version.

        A request that cannot be served (a text over the token limit without truncation, no
        tuned rule) gets its error in its slot; the others are answered.
        """
        import time

        ref = self.ref()
        meta = self.meta(ref)
        enc = self.encoder_for(meta)
        settings = TextSettings.from_meta(meta.text)
        t0 = time.perf_counter()
        plans: list[Rule | KnnclassError] = []
        extras: list[tuple[dict[str, Rule], Where | None]] = []
        seen: list[Prepared] = []
        source = settings.source()
        for req in requests:
            try:
                raw = list(req.texts) if req.texts else [_compose(source, f) for f in req.fields]
            except KnnclassError as e:
                seen.append(Prepared([], []))
                extras.append(({}, None))
                plans.append(e)
                continue
            seen.append(prepare(enc, raw, settings))
            try:
                if not req.truncate:
                    self.check_length(enc, seen[-1])
                resolved = req.where.resolve(meta.payload_schema) if req.where else None
                chosen = (req.rule or self.rule(meta)).with_k(req.k)
                extra = (self.set_rules(meta, req.rule, req.k), resolved)
                plans.append(chosen)
                extras.append(extra)
            except KnnclassError as e:
                extras.append(({}, None))
                plans.append(e)
        texts = [t for p, s in zip(plans, seen, strict=True) if isinstance(p, Rule) for t in s.texts]
        vecs = enc.embed(texts, long=settings.long) if texts else np.zeros((0, enc.dim), dtype=np.float32)
        t1 = time.perf_counter()
        # one search and one vote for all requests that ask the same (rule, filter, set rules)
        spans: list[slice] = []
        groups: list[tuple[tuple[Rule, Where | None, dict[str, Rule]], list[int]]] = []
        pos = 0
        for i, (plan, prep, (rules, where)) in enumerate(zip(plans, seen, extras, strict=True)):
            n = len(prep.texts) if isinstance(plan, Rule) else 0
            spans.append(slice(pos, pos + n))
            pos += n
            if isinstance(plan, Rule):
                key = (plan, where, rules)
                group = next((g for k, g in groups if k == key), None)
                if group is None:
                    groups.append((key, [i]))
                else:
                    group.append(i)
        answers: dict[int, list[Prediction]] = {}
        for (plan, where, rules), members in groups:
            rows = np.concatenate([np.arange(pos)[spans[i]] for i in members])
            preds = self.classify_vectors(vecs[rows], ref, plan, with_text, meta, where, rules)
            at = 0
            for i in members:
                n = spans[i].stop - spans[i].start
                answers[i] = [_shortened(p, s) for p, s in zip(preds[at : at + n], seen[i].shortened, strict=True)]
                at += n
        out: list[ClassifyResult | KnnclassError] = []
        for i, plan in enumerate(plans):
            out.append(ClassifyResult(answers[i], ref, plan, enc.identity) if isinstance(plan, Rule) else plan)
        if timings is not None:
            timings.encode_s, timings.search_s, timings.texts = t1 - t0, time.perf_counter() - t1, len(texts)
        return out

    @staticmethod
    def check_length(enc: Encoder, seen: Prepared, names: Sequence[str] | None = None) -> None:
        """Refuse texts over the encoder's token limit, after cleaning (callers that asked not to truncate)."""
        for i, n in enumerate(enc.count_tokens(seen.texts)):
            if n > enc.max_tokens:
                what = names[i] if names else f"text {i}"
                raise InputError(
                    f"{what} has {n} tokens, over the encoder's limit of {enc.max_tokens}; "
                    "shorten it or send truncate=true"
                )

    def classify_vectors(
        self,
        vectors: np.ndarray,
        ref: Ref,
        rule: Rule,
        with_text: bool = False,
        meta: CollectionMeta | None = None,
        where: Where | None = None,
        rules: Mapping[str, Rule] | None = None,
    ) -> list[Prediction]:
        """Search, vote, calibrate and decide for embedded tickets (the version's head when it serves).

        One search per ticket serves every label set: each extra set votes with its own rule
        (`rules`, default its tuned one) and calibration among the neighbours that have a label
        of it, and the answers go to `Prediction.sets`.
        """
        meta = meta or self.meta(ref)
        names = meta.set_names()
        plans = {names[0]: rule, **(rules if rules is not None else self.set_rules(meta))}
        n_indexed = self.store.count(ref, where) if any(r.size == "pct" for r in plans.values()) else 0
        ks = {name: min(r.k(n_indexed), K_MAX) for name, r in plans.items()}
        width = max(*ks.values(), 3)  # familiarity looks at the top 3 whatever k is
        hits = self.store.search(ref, vectors, width, with_text=with_text, where=where) if len(vectors) else []
        head = self._head(meta)
        policy = Policy.from_dict(meta.policy) if meta.policy else None
        primary = self._decide(vectors, hits, rule, ks[names[0]], width, policy, head)
        if len(names) == 1:
            return primary
        from .labelsets import project_hits, set_meta

        answers = {names[0]: primary}
        for name in names[1:]:
            sm = set_meta(meta, name)
            pol = Policy.from_dict(sm.policy) if sm.policy else None
            answers[name] = self._decide(vectors, project_hits(hits, name), plans[name], ks[name], width, pol, None)
        return [replace(p, sets={n: answers[n][i] for n in names}) for i, p in enumerate(primary)]

    def _decide(
        self,
        vectors: np.ndarray,
        hits: Sequence[Sequence[Hit]],
        rule: Rule,
        k: int,
        width: int,
        policy: Policy | None,
        head: Head | None,
    ) -> list[Prediction]:
        """Vote, calibrate and decide one label set from the neighbours found."""
        labels = sorted({h.label for row in hits for h in row} | set(head.labels if head else ()))
        codes, scores = hits_to_arrays(hits, labels, width)
        head_probs = None
        if head is not None:
            head_probs = head_columns(head.labels, head.probabilities(vectors), labels)
        sc = score_rows(codes, scores, labels, rule, k, policy, head_probs, vectors)
        out = []
        for i, why in enumerate(reasons(sc, rule)):
            guess = labels[sc.guess[i]] if sc.guess[i] >= 0 else None
            order = np.argsort(-sc.dist[i], kind="stable")[:4]
            alts = [(labels[j], float(sc.dist[i, j])) for j in order if j != sc.guess[i] and sc.dist[i, j] > 0][:3]
            fam = float(sc.familiarity[i])
            out.append(
                Prediction(
                    guess if why is None else None,
                    float(sc.probability[i]),
                    why is not None,
                    why,
                    [Neighbour(h.id, h.label, h.score) for h in hits[i][:k]],
                    guess,
                    fam if np.isfinite(fam) else None,
                    alts,
                    "knn" if head is None else "head" if rule.blend == 1.0 else "ensemble",
                )
            )
        return out

    def _head(self, meta: CollectionMeta) -> Head | None:
        """The head this version serves, when promote chose one."""
        task = meta.extra.get("head_task")
        if not meta.head or task is None:
            return None
        from .jobs.head import cached_heads

        return cached_heads(meta.head)[task]

    # --- tuning and evaluation ---------------------------------------------------------
    def loo_neighbours(
        self, ref: Ref, limit: int | None = None, batch_size: int = 512, where: Where | None = None
    ) -> list[tuple[Example, list[Hit]]]:
        """Every stored example (matching `where`) with its nearest (matching) neighbours, itself left out."""
        return [(e, h) for e, h, _ in self._loo(ref, limit, batch_size, where=where)]

    def _loo(
        self,
        ref: Ref,
        limit: int | None = None,
        batch_size: int = 512,
        with_vectors: bool = False,
        where: Where | None = None,
        max_rows: int | None = None,
    ) -> list[tuple[Example, list[Hit], np.ndarray | None]]:
        """`max_rows`: stop after that many examples (in scroll order); None: every one."""
        n_indexed = self.store.count(ref, where)
        limit = min(limit or K_MAX, max(1, n_indexed - 1)) + 1
        out: list[tuple[Example, list[Hit], np.ndarray | None]] = []
        pages = self.store.scroll(ref, batch_size, with_vectors=True, where=where)
        try:
            for examples, vecs in pages:
                assert vecs is not None
                take = len(examples) if max_rows is None else min(len(examples), max_rows - len(out))
                examples, vecs = examples[:take], vecs[:take]
                for e, row, v in zip(examples, self.store.search(ref, vecs, limit, where=where), vecs, strict=True):
                    out.append((e, [h for h in row if h.id != e.id][: limit - 1], v if with_vectors else None))
                if max_rows is not None and len(out) >= max_rows:
                    break
        finally:
            close = getattr(pages, "close", None)  # a generator: ends a served store's scroll cursor
            if close is not None:
                close()
        return out

    def tune(
        self,
        validation: Sequence[Example] | None = None,
        unknown_label: str | None = None,
        objective: Objective | None = None,
        where: Where | None = None,
    ) -> TuningResult:
        """Pick and calibrate the rule (leave-one-out without `validation`); stamp it on the collection.

        With `where`, tuned on the matching examples with only matching neighbours voting."""
        ref = self.ref()
        meta = self.meta(ref)
        where = where.resolve(meta.payload_schema) if where else None
        # a served head's share is re-chosen on validation; leave-one-out rows trained the head, so keep it
        kept = Rule.from_dict(meta.rule).blend if meta.rule else 1.0
        blends = (*BLENDS, 1.0) if validation is not None else (kept,)
        result = self.tune_version(ref, validation, unknown_label, objective, self._head(meta), where, blends)
        self.stamp(ref, result, where=where)
        return result

    def tune_all(
        self,
        validation: Sequence[Example] | None = None,
        unknown_label: str | None = None,
        objective: Objective | None = None,
        where: Where | None = None,
    ) -> dict[str, TuningResult]:
        """`tune` for every label set, primary first: each on the rows that have a label of it
        (`unknown_label` applies to the primary set)."""
        from .labelsets import project_example

        names = self.meta().set_names()
        out = {names[0]: self.tune(validation, unknown_label, objective, where)}
        for name in names[1:]:
            val = None
            if validation is not None:
                val = [p for p in (project_example(e, name) for e in validation) if p is not None]
                if not val:
                    raise InputError(f"no --validation row has a label of {name!r}")
            out[name] = self.for_set(name).tune(val, None, objective, where)
        return out

    def set_long_text(self, validation: Sequence[Example] | None, long: str) -> dict[str, float]:
        """Set the long-text strategy for incoming tickets; "auto" picks the one whose guesses
        score best on `validation` (returned per strategy). Stored examples keep their vectors;
        promote re-embeds them with the new setting."""
        ref = self.ref()
        meta = self.meta(ref)
        settings = TextSettings.from_meta(meta.text)
        scores: dict[str, float] = {}
        if long == "auto":
            if not validation:
                raise InputError("--long-text auto needs --validation (it picks by validation accuracy)")
            enc = self.encoder_for(meta)
            cleaned = clean_texts([e.text for e in validation], settings.clean)
            truth = [e.label for e in validation]
            n = self.store.count(ref)
            for strategy in LONG_TEXT_STRATEGIES:
                hits = self.store.search(ref, enc.embed(cleaned, long=strategy), min(K_MAX, n))
                scores[strategy] = tune_rule(truth, hits, n).best.score
            long = max(LONG_TEXT_STRATEGIES, key=lambda st: (scores[st], st == settings.long))
        chosen = replace(settings, long=long)  # validates the name
        self.store.set_meta(ref, meta.with_(text=chosen.to_dict()))
        return scores

    def stamp(self, ref: Ref, result: TuningResult, where: Where | None = None, **changes: Any) -> None:
        """Store a tuning result (rule, summary, calibration policy; the filter tuned under) on version `ref`."""
        policy = result.policy.to_dict() if result.policy else None
        summary = {**result.summary(), **({"where": where.to_filter()} if where else {})}
        meta = self.meta(ref).with_(rule=result.best.rule.to_dict(), tuning=summary, policy=policy)
        self.store.set_meta(ref, meta.with_(**changes))

    def tune_version(
        self,
        ref: Ref,
        validation: Sequence[Example] | None,
        unknown_label: str | None = None,
        objective: Objective | None = None,
        head: Head | None = None,
        where: Where | None = None,
        blends: Sequence[float] = (1.0,),
    ) -> TuningResult:
        """Tune version `ref` without stamping it: leave-one-out, or `validation` (embedded with its encoder).

        The label's typical similarity (for familiarity) always comes from the stored
        examples' own leave-one-out neighbours; with `head` its answers (blended with the
        vote at the best of the head shares `blends`) are calibrated.
        """
        rows = self.tuning_rows(ref, validation, unknown_label, where, with_vectors=head is not None)
        return rows.tune(objective, head, blends)

    def tuning_rows(
        self,
        ref: Ref,
        validation: Sequence[Example] | None,
        unknown_label: str | None = None,
        where: Where | None = None,
        with_vectors: bool = False,
    ) -> TuningRows:
        """What tuning version `ref` scores: each row's label, neighbours and (`with_vectors`, or
        always on validation) vector, and the stored examples' typical similarity and novelty
        model. Searching (and embedding validation) is the costly part; tune the rows several ways."""
        n_indexed = self.store.count(ref, where)
        if n_indexed < 2:
            what = " matching the filter" if where else ""
            raise InputError(f"collection {ref.name!r} needs at least 2 examples{what} to tune (has {n_indexed})")
        if validation is None:
            if unknown_label is not None:
                raise InputError("--unknown-label needs --validation (indexed examples are all in scope)")
            loo = self._loo(ref, K_MAX, with_vectors=with_vectors, where=where, max_rows=LOO_ROWS)
            truth, hits = [e.label for e, _, _ in loo], [h for _, h, _ in loo]
            vecs = [v for _, _, v in loo if v is not None]
            mode = "leave-one-out"
        else:
            loo = self._loo(ref, 10, with_vectors=unknown_label is not None, where=where, max_rows=LOO_ROWS)
            truth = [e.label for e in validation]
            arr = self.embed_texts([e.text for e in validation], ref)
            vecs = list(arr)
            hits = self.store.search(ref, arr, min(K_MAX, n_indexed), where=where)
            _check_labels(truth, {h.label for row in hits for h in row}, unknown_label)
            mode = "validation"
        typical = typical_similarity([e.label for e, _, _ in loo], [row for _, row, _ in loo])
        stored = [(e.label, v) for e, _, v in loo if v is not None] if unknown_label is not None else []
        novelty = fit_novelty(np.stack([v for _, v in stored]), [lab for lab, _ in stored]) if stored else None
        matrix = np.stack(vecs) if vecs else None
        return TuningRows(truth, hits, n_indexed, unknown_label, mode, typical, matrix, novelty)

    def evaluate(
        self, examples: Sequence[Example], unknown_label: str | None = None, where: Where | None = None
    ) -> dict[str, Any]:
        """Metrics of the served rules on labelled `examples` (see `metrics.evaluation_metrics`).

        The primary set's metrics at the top (as for one-set collections) and every set's,
        primary included, under `label_sets` keyed by label column; a set is scored on the rows
        that have a label of it (`unknown_label` applies to the primary set). One classify serves all.
        """
        preds, ref, rule = self.classify([e.text for e in examples], where=where)
        meta = self.meta(ref)
        names = meta.set_names()
        n = self.store.count(ref, where.resolve(meta.payload_schema) if where else None)
        rules = {names[0]: rule, **self.set_rules(meta)}
        sets: dict[str, dict[str, Any]] = {}
        for name in names:
            if name == names[0]:
                truth, got, unknown = [e.label for e in examples], list(preds), unknown_label
            else:
                rows = [
                    (e.labels[name], p.sets[name]) for e, p in zip(examples, preds, strict=True) if name in e.labels
                ]
                if not rows:
                    continue
                truth, got, unknown = [t for t, _ in rows], [p for _, p in rows], None
            seen = {nb.label for p in got for nb in p.neighbours} | {p.suggestion for p in got if p.suggestion}
            _check_labels(truth, seen, unknown)
            r = rules[name]
            sets[name] = {
                **evaluation_metrics(truth, got, unknown),
                "vote": r.vote,
                "size": r.size,
                "k": r.k(n),
                "percent": r.value if r.size == "pct" else None,
                "threshold": r.threshold,
                "novelty": r.novelty,
                "source": got[0].source if got else "knn",
            }
        return {
            **sets[names[0]],
            "collection": ref.name,
            "version": ref.version,
            **({"where": where.to_filter()} if where else {}),
            "label_sets": sets,
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
            "label_sets": meta.set_names(),
            "sets": {
                name: {"labels": self.for_set(name, meta).store.label_counts(ref), **(meta.sets or {}).get(name, {})}
                for name in meta.set_names()[1:]
            },
            "payload_schema": meta.payload_schema or {},
        }

    def iter_examples(self, ref: Ref | None = None) -> Iterable[Example]:
        for examples, _ in self.store.scroll(ref or self.ref()):
            yield from examples


def payload_schema(examples: Sequence[Example], stamped: Mapping[str, str] | None) -> dict[str, str]:
    """The metadata schema after indexing `examples`: the stamped kinds, plus inferred ones for new columns."""
    schema = dict(stamped or {})
    new: dict[str, list[Any]] = {}
    for e in examples:
        for k, v in e.meta.items():
            if k not in schema:
                new.setdefault(validate_meta_column(k), []).append(v)
    schema.update({k: infer_kind(vs) for k, vs in new.items()})
    return schema


def typed_metadata(examples: Sequence[Example], schema: Mapping[str, str]) -> list[Example]:
    """`examples` with metadata values as their column's kind stores them (an error names the example)."""
    out = []
    for e in examples:
        if not e.meta:
            out.append(e)
            continue
        try:
            typed = {k: to_payload_value(k, schema[k], v) for k, v in e.meta.items()}
        except InputError as err:
            raise InputError(f"example {e.id!r}: {err}") from None
        out.append(e if typed == e.meta else replace(e, meta=typed))
    return out


def _shortened(p: Prediction, shortened: bool) -> Prediction:
    sets = {n: replace(q, shortened=shortened) for n, q in p.sets.items()}
    return replace(p, shortened=shortened, sets=sets)


def _compose(source: TextSource, fields: Mapping[str, str]) -> str:
    """A ticket's text from named fields, as the collection composes it; unknown names are refused."""
    known = source.template_fields()
    extra = sorted(set(fields) - set(known))
    if extra:
        raise InputError(f"fields: unknown field {extra[0]!r}; this collection's text comes from {', '.join(known)}")
    text = source.compose(dict(fields))
    if is_blank(text):
        raise InputError(f"fields: no text in {', '.join(known)}")
    return text


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


def encoder_loader(explicit: str | Path | None = None) -> EncoderLoader:
    """Loads `explicit` if given, else the stamped encoder source when it exists here, else the default model."""

    def load(source: str) -> Encoder:
        import os

        from .encoders import load_encoder

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time
        if explicit is not None:
            return load_encoder(explicit)
        if source and Path(source).exists():
            return load_encoder(source)
        return load_encoder(None)

    return load


def open_classifier(settings: Settings, create: bool = False) -> Classifier:
    """The classifier of `settings.collection` in the store `settings` name (see knnclass.settings)."""
    from .store import open_store

    store = open_store(settings=settings, create=create)
    return Classifier(store, settings.collection, encoder_loader=encoder_loader(settings.encoder))
