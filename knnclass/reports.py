"""Why the classifier errs and which labels are suspect: reports, suspects, duplicates, drift."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from .calibration import reliability_bins
from .classifier import Classifier
from .data import Example
from .errors import DependencyError, ExampleNotFoundError, InputError
from .metrics import evaluation_metrics
from .tuning import K_GRID, K_MAX, PCT_GRID, hits_to_arrays
from .voting import k_for_percent, vote_batch

__all__ = [
    "REPORT_FILES",
    "DriftReport",
    "DuplicatePair",
    "FlaggedTicket",
    "Suspect",
    "apply_relabels",
    "drift",
    "find_duplicates",
    "find_suspects",
    "write_report",
]

REPORT_FILES = ("report.md", "confusions.png", "accuracy_vs_k.png", "reliability.png", "coverage_accuracy.png")


@dataclass(frozen=True)
class Suspect:
    """An example whose label most of its neighbours contradict."""

    id: str
    label: str
    suggested_label: str
    margin: float
    agreement: float
    text: str
    neighbours: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_suspects(clf: Classifier, k: int = 10, min_agreement: float = 0.5, limit: int | None = None) -> list[Suspect]:
    """Leave-one-out: examples whose similarity-weighted neighbour vote picks another label.

    margin = weight share of the suggested label minus that of the example's own label.
    """
    ref = clf.ref()
    out = []
    for e, hits in clf.loo_neighbours(ref, limit=k):
        weights: dict[str, float] = {}
        for h in hits:
            weights[h.label] = weights.get(h.label, 0.0) + max(h.score, 0.0)
        total = sum(weights.values())
        if not total:
            continue
        best, w = max(weights.items(), key=lambda kv: (kv[1], kv[0]))
        if best == e.label or w / total < min_agreement:
            continue
        nbs = [{"id": h.id, "label": h.label, "score": round(h.score, 4)} for h in hits]
        out.append(Suspect(e.id, e.label, best, (w - weights.get(e.label, 0.0)) / total, w / total, e.text, nbs))
    out.sort(key=lambda s: (-s.margin, s.id))
    return out[:limit] if limit else out


def apply_relabels(clf: Classifier, path: Path, who: str = "cli") -> int:
    """Apply reviewed corrections (CSV: id,label) through the live relabel path; all ids checked first.

    One change set in the label history (`knnclass undo` reverts the whole file).
    """
    from .data import _rows

    header, rows = _rows(path)
    if "id" not in header or "label" not in header:
        raise InputError(f"{path}: needs columns id,label (has {', '.join(header)})")
    pairs = [(r["id"].strip(), r["label"].strip()) for _, r in rows]
    if not pairs or any(not i or not lab for i, lab in pairs):
        raise InputError(f"{path}: every row needs an id and a label")
    repeated = sorted(i for i, c in Counter(i for i, _ in pairs).items() if c > 1)
    if repeated:
        raise InputError(f"{path}: id {repeated[0]!r} is listed more than once; nothing changed")
    ref = clf.ref()
    found = {e.id for e, _ in clf.store.retrieve(ref, [i for i, _ in pairs])}
    missing = [i for i, _ in pairs if i not in found]
    if missing:
        raise ExampleNotFoundError(
            f"{path}: {len(missing)} ids are not in the collection (first: {missing[0]!r}); nothing changed"
        )
    clf.relabel_many(pairs, ref, who)
    return len(pairs)


class DuplicatePair(TypedDict):
    """Two stored examples at cosine >= the threshold (`a` < `b`; `text_a` is a's text)."""

    a: str
    b: str
    label_a: str
    label_b: str
    score: float
    conflict: bool  # the labels differ
    text_a: str


class FlaggedTicket(TypedDict):
    """A new ticket further from the history than the cutoff: possibly a new topic."""

    text: str
    nearest_similarity: float
    nearest_label: str | None


class DriftReport(TypedDict):
    """`drift`'s result: nearest-neighbour similarity quantiles of new tickets vs the history's."""

    n_new: int
    n_history: int
    history_quantiles: dict[int, float]
    new_quantiles: dict[int, float]
    new_topic_cutoff: float
    flagged_share: float
    expected_share: float
    flagged: list[FlaggedTicket]


def find_duplicates(clf: Classifier, threshold: float = 0.98) -> list[DuplicatePair]:
    """Pairs of stored examples at cosine >= threshold; pairs with conflicting labels first."""
    if not 0 < threshold <= 1:
        raise InputError(f"threshold must be in (0, 1], not {threshold}")
    ref = clf.ref()
    seen: set[tuple[str, str]] = set()
    out: list[DuplicatePair] = []
    for e, hits in clf.loo_neighbours(ref, limit=5):
        for h in hits:
            if h.score < threshold:
                break
            key = (e.id, h.id) if e.id < h.id else (h.id, e.id)
            if key in seen:
                continue
            seen.add(key)
            out.append(
                {
                    "a": e.id,
                    "b": h.id,
                    "label_a": e.label,
                    "label_b": h.label,
                    "score": round(h.score, 5),
                    "conflict": e.label != h.label,
                    "text_a": e.text,
                }
            )
    out.sort(key=lambda d: (not d["conflict"], -float(d["score"])))
    return out


def drift(clf: Classifier, texts: Sequence[str], quantile: float = 5.0) -> DriftReport:
    """Nearest-neighbour similarity of new tickets vs the history's own (leave-one-out) distribution.

    A new ticket is flagged as a possible new topic when its nearest stored example is
    less similar than `quantile` % of stored examples are to theirs.
    """
    ref = clf.ref()
    history = np.array([hits[0].score for _, hits in clf.loo_neighbours(ref, limit=1) if hits])
    if len(history) == 0:
        raise InputError("the collection needs at least 2 examples")
    new_hits = clf.store.search(ref, clf.embed_texts(list(texts), ref), 1)
    new = np.array([h[0].score if h else 0.0 for h in new_hits])
    cut = float(np.percentile(history, quantile))
    qs = [5, 25, 50, 75, 95]
    flagged: list[FlaggedTicket] = [
        {"text": t, "nearest_similarity": round(float(s), 4), "nearest_label": h[0].label if h else None}
        for t, s, h in zip(texts, new, new_hits, strict=True)
        if s < cut
    ]
    return {
        "n_new": len(texts),
        "n_history": len(history),
        "history_quantiles": {q: round(float(np.percentile(history, q)), 4) for q in qs},
        "new_quantiles": {q: round(float(np.percentile(new, q)), 4) for q in qs},
        "new_topic_cutoff": round(cut, 4),
        "flagged_share": len(flagged) / len(texts),
        "expected_share": quantile / 100,
        "flagged": sorted(flagged, key=lambda d: d["nearest_similarity"]),
    }


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise DependencyError("reports need matplotlib: pip install 'knnclass[train]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(
    clf: Classifier, examples: Sequence[Example], out: Path, positive_label: str | None = None
) -> dict[str, Any]:
    """report.md + PNGs for a labelled test set, with the collection's tuned rule."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    ref = clf.ref()
    meta = clf.meta(ref)
    rule = clf.rule(meta)
    n_indexed = clf.store.count(ref)
    truth = [e.label for e in examples]
    hits = clf.store.search(ref, clf.embed_texts([e.text for e in examples], ref), min(K_MAX, n_indexed))
    labels = sorted({h.label for row in hits for h in row} | set(truth))
    codes, scores = hits_to_arrays(hits, labels, max(len(r) for r in hits))
    k = min(rule.k(n_indexed), K_MAX)
    preds, _, _ = clf.classify([e.text for e in examples])  # what serving answers: calibrated, head included
    pred = [p.label for p in preds]
    base = [p.suggestion for p in preds]
    conf = np.array([p.confidence for p in preds])
    m = evaluation_metrics(truth, preds)
    files: dict[str, str] = {}

    # confusions: the most frequent (true -> predicted) mistakes, readable for 77+ classes
    pairs = Counter((t, p or "(abstained)") for t, p in zip(truth, pred, strict=True) if t != p).most_common(20)
    fig, ax = plt.subplots(figsize=(10, 7))
    if pairs:
        ax.barh([f"{t} → {p}" for (t, p), _ in pairs][::-1], [n for _, n in pairs][::-1], color="#c0504d")
    ax.set_xlabel("test tickets")
    errors = sum(t != p for t, p in zip(truth, pred, strict=True))
    ax.set_title(f"Top {len(pairs)} confusions (true → predicted)\n{errors} errors in {len(truth)} test tickets")
    fig.tight_layout()
    fig.savefig(out / "confusions.png", dpi=110)
    plt.close(fig)
    files["confusions"] = "confusions.png"

    # accuracy vs k, for top-k and top-k%
    fig, ax = plt.subplots(figsize=(8, 5))
    curve: dict[str, list[tuple[int, float]]] = {}
    truth_codes = np.array([labels.index(t) for t in truth])

    def accuracy(kk: int, vote: str) -> float:
        return float(np.mean(vote_batch(codes, scores, kk, vote, len(labels))[0] == truth_codes))  # type: ignore[arg-type]

    for vote in ("majority", "weighted"):
        ks = [kk for kk in K_GRID if kk <= codes.shape[1]]
        acc = [accuracy(kk, vote) for kk in ks]
        curve[f"top-k {vote}"] = list(zip(ks, acc, strict=True))
        ax.plot(ks, acc, marker="o", label=f"top-k, {vote}")
        pk = sorted({k_for_percent(p, n_indexed) for p in PCT_GRID if k_for_percent(p, n_indexed) <= codes.shape[1]})
        pacc = [accuracy(kk, vote) for kk in pk]
        ax.plot(pk, pacc, marker="s", linestyle="--", label=f"top-k%, {vote}")
    ax.axvline(k, color="grey", linestyle=":", label=f"chosen k={k}")
    ax.set_xscale("log")
    ax.set_xlabel("neighbours consulted (k; top-k% converted to k)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy vs neighbourhood size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_k.png", dpi=110)
    plt.close(fig)
    files["accuracy_vs_k"] = "accuracy_vs_k.png"

    # reliability diagram: is a 0.8 answer right 80 % of the time?
    right = np.array([b == t for b, t in zip(base, truth, strict=True)])
    fig, ax = plt.subplots(figsize=(6.5, 6))
    bins = reliability_bins(conf, right)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    ax.plot([q[1] for q in bins], [q[2] for q in bins], marker="o", label="test tickets")
    for _, c, a, n in bins:
        ax.annotate(str(n), (c, a), textcoords="offset points", xytext=(4, -10), fontsize=7, color="grey")
    ax.set_xlabel("confidence (probability the best guess is right)")
    ax.set_ylabel("share right")
    ax.set_title(f"Reliability diagram (ECE {m['ece']:.4f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=110)
    plt.close(fig)
    files["reliability"] = "reliability.png"

    # coverage vs answered accuracy, answering the most confident first; the served point marked
    order = np.argsort(-conf, kind="stable")
    cover = np.arange(1, len(order) + 1) / len(order)
    acc_curve = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(cover, acc_curve, label="answer the most confident share")
    ax.scatter([m["coverage"]], [m["answered_accuracy"]], color="black", zorder=5, label=f"served: {rule.describe()}")
    ax.set_xlabel("coverage (share of tickets answered)")
    ax.set_ylabel("accuracy of answered tickets")
    ax.set_title("Coverage vs answered accuracy")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "coverage_accuracy.png", dpi=110)
    plt.close(fig)
    files["coverage_accuracy"] = "coverage_accuracy.png"

    binary = None
    if positive_label is None and len(set(truth)) == 2 and "urgent" in truth:
        positive_label = "urgent"
    if positive_label is not None:
        if positive_label not in labels:
            raise InputError(f"positive label {positive_label!r} is not a label of this collection")
        pos = labels.index(positive_label)
        tally = vote_batch(codes, scores, k, rule.vote, len(labels))[3]
        share = tally[:, pos] / np.clip(tally.sum(axis=1), 1e-9, None)
        is_pos = np.array([t == positive_label for t in truth])
        pts = []
        for th in np.linspace(0.05, 0.95, 19):
            flagged = share >= th
            p = float(np.mean(is_pos[flagged])) if flagged.any() else np.nan
            r = float(np.mean(flagged[is_pos])) if is_pos.any() else np.nan
            pts.append((float(th), p, r))
        fig, ax = plt.subplots(figsize=(8, 5))
        ax.plot([q[0] for q in pts], [q[1] for q in pts], marker="o", label=f"precision ({positive_label})")
        ax.plot([q[0] for q in pts], [q[2] for q in pts], marker="s", label=f"recall ({positive_label})")
        ax.axvline(0.5, color="grey", linestyle=":", label="majority (0.5)")
        ax.set_xlabel(f"flag as {positive_label} when its vote share ≥")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{positive_label}: recall / precision trade-off")
        ax.legend(loc="lower left")
        fig.tight_layout()
        fig.savefig(out / "positive_tradeoff.png", dpi=110)
        plt.close(fig)
        files["positive_tradeoff"] = "positive_tradeoff.png"
        binary = {"positive_label": positive_label, "points": pts}

    rows = sorted(m["per_class"].items(), key=lambda kv: kv[1]["f1"])
    md = [
        f"# knnclass report: {ref.name} ({ref.version})",
        "",
        f"Rule: {rule.describe()} (k={k}); encoder `{meta.encoder}`; {n_indexed} indexed; {len(truth)} test tickets.",
        "",
        f"**Accuracy {m['accuracy']:.4f}**, macro-F1 {m['macro_f1']:.4f}, coverage {m['coverage']:.4f}, "
        f"answered accuracy {m['answered_accuracy']:.4f}, ECE {m['ece']:.4f}.",
        "",
    ]
    md += [f"![{name}]({f})" for name, f in files.items()]
    md += [
        "",
        "## Per class (weakest first)",
        "",
        "| label | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
    ]
    md += [f"| {lab} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |" for lab, v in rows]
    md += ["", "## Accuracy vs k", "", "| curve | k → accuracy |", "| --- | --- |"]
    md += [f"| {name} | " + ", ".join(f"{kk}: {a:.4f}" for kk, a in pts_) + " |" for name, pts_ in curve.items()]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "coverage": m["coverage"],
        "answered_accuracy": m["answered_accuracy"],
        "ece": m["ece"],
        "k": k,
        "files": ["report.md", *files.values()],
        "binary": binary,
        "out": str(out),
    }


def write_relabels_template(suspects: Sequence[Suspect], path: Path) -> None:
    """A CSV of suggestions to review and feed back with `suspects --apply`."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "current_label", "margin", "text"])
        for s in suspects:
            w.writerow([s.id, s.suggested_label, s.label, f"{s.margin:.3f}", s.text])
