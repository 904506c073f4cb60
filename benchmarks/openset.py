"""Trustworthy decisions on Banking77, through the CLI: open-set, operating points, calibration.

Open set: 25 % of the intents (seeded) are held out of the index; their rows are the
`unknown` label in validation (carved from train) and test. Reported: known-intent accuracy,
unknown recall and AUROC with the default objective (validation with unknown rows: unknown
recall's 90 % lower bound >= 0.75, in-scope accuracy maximised), with `--unknown-weight 0.5`
(balanced accuracy, the default before 2026-12-04) and 0.25 (the default before that) for
comparison, and without any unknown rows (leave-one-out tuning only); the size of the tuned
version's meta.json (its policy holds the novelty model).
Closed set: the whole train set indexed, leave-one-out tuning; test accuracy, ECE, and the
coverage at 98 % and 99 % answered accuracy (`tune --target-accuracy`). Off-topic texts
(gibberish, trivia, recipes) classified on that collection. With --head, a transfer head
(logistic regression) is trained, promoted and evaluated the same way.

    python benchmarks/openset.py [--seed 0] [--head] [--tuned] [--tuned-epochs 3]
    python benchmarks/openset.py --latency   # adds the novelty model's classify cost to the JSON

With --tuned, the open-set rows are also measured over a tuned encoder: full tuning (cosine
heads, the library's defaults) on the indexed known-intent rows with validation's known rows,
promoted into the open-set collection (`--rule auto`), re-tuned on validation with its unknown
rows, scored on test with the default objective and `--unknown-weight 0.5`.
Writes benchmarks/results/openset.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "banking77"
OUT = REPO / "benchmarks" / "results"

OFF_TOPIC = [
    "asdfgh",
    "qwerty uiop zxcvb",
    "lorem ipsum dolor sit amet",
    "Who won the football world cup in 1998?",
    "What is the capital of Australia?",
    "How many moons does Jupiter have?",
    "How long should I boil an egg for a soft yolk?",
    "Preheat the oven to 180 degrees and whisk two eggs with sugar",
    "What is a good recipe for banana bread?",
    "Recommend me a science fiction novel",
]


def knn(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "knnclass", *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"knnclass {' '.join(args)} failed: {r.stderr[-2000:]}")
    return r.stdout


# `tune` as it was before the novelty model (#15): no Mahalanobis features, floor chosen on in-sample P(in scope)
BEFORE = (
    "import sys, knnclass.classifier as c, knnclass.tuning as t; c.fit_novelty = lambda *a, **k: None; "
    "t._out_of_fold = lambda x, known, names, folds=5: t.fit_calibration(x, known, names).probability(x); "
    "from knnclass.cli import main; sys.argv = ['knnclass', *sys.argv[1:]]; main()"
)


def knn_before(*args: str) -> str:
    r = subprocess.run([sys.executable, "-c", BEFORE, *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"knnclass {' '.join(args)} (before) failed: {r.stderr[-2000:]}")
    return r.stdout


def coverage_at(store: list[str], test: Path, targets: tuple[float, ...] = (0.98, 0.99)) -> dict[str, float]:
    """On the test rows' own curve: the largest share answered, most confident first, at each accuracy."""
    out = Path(tempfile.mkdtemp()) / "pred.csv"
    knn("classify", *store, "--input", str(test), "--output", str(out))
    rows = _read(out)
    truth = [r["category"] for r in _read(test)]
    conf = [float(r["confidence"]) for r in rows]
    right = [(r["label"] or r["suggestion"]) == t for r, t in zip(rows, truth, strict=True)]
    order = sorted(range(len(rows)), key=lambda i: -conf[i])
    res = {}
    for target in targets:
        best, hits = 0, 0
        for m, i in enumerate(order, 1):
            hits += right[i]
            if hits / m >= target:
                best = m
        res[str(target)] = best / len(rows)
    return res


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["text", "category"])
        w.writeheader()
        w.writerows(rows)


def protocol(tmp: Path, seed: int) -> dict[str, object]:
    """index.csv (known intents, 90 % of their train rows), val.csv and test.csv with 'unknown'."""
    rng = random.Random(seed)
    train, test = _read(DATA / "train.csv"), _read(DATA / "test.csv")
    intents = sorted({r["category"] for r in train})
    held = set(rng.sample(intents, round(0.25 * len(intents))))
    known_rows = [r for r in train if r["category"] not in held]
    rng.shuffle(known_rows)
    n_val = len(known_rows) // 10
    unknown_rows = [r for r in train if r["category"] in held]
    rng.shuffle(unknown_rows)
    val = known_rows[:n_val] + [
        {"text": r["text"], "category": "unknown"} for r in unknown_rows[: len(unknown_rows) // 10]
    ]
    test_rows = [{"text": r["text"], "category": "unknown" if r["category"] in held else r["category"]} for r in test]
    _write(tmp / "index.csv", known_rows[n_val:])
    closed = list(train)
    rng.shuffle(closed)
    _write(tmp / "closed_val.csv", closed[: len(closed) // 10])  # for the head: validation outside the index
    _write(tmp / "closed_index.csv", closed[len(closed) // 10 :])
    _write(tmp / "val.csv", val)
    _write(tmp / "test.csv", test_rows)
    n_unknown_val = sum(r["category"] == "unknown" for r in val)
    return {
        "held_out_intents": len(held),
        "indexed": len(known_rows) - n_val,
        "validation": len(val),
        "validation_unknown": n_unknown_val,
        "test": len(test_rows),
        "test_unknown": sum(r["category"] == "unknown" for r in test_rows),
    }


def _ev(path: Path, *store: str, unknown: bool = True) -> dict[str, object]:
    extra = ["--unknown-label", "unknown"] if unknown else []
    m = json.loads(knn("evaluate", str(path), *store, *extra, "--json"))
    keys = (
        "accuracy",
        "in_scope_accuracy",
        "unknown_recall",
        "auroc_unknown",
        "coverage",
        "answered_accuracy",
        "guess_accuracy",
        "ece",
        "reasons",
        "source",
        "threshold",
        "novelty",
        "k",
        "vote",
    )
    return {k: m.get(k) for k in keys if k in m}


def _meta_size(store: Path) -> dict[str, object]:
    """Bytes of the tuned version's meta.json and of its novelty model, and the time to load it."""
    from knnclass.policy import Policy

    path = max(store.rglob("meta.json"), key=lambda p: p.stat().st_mtime)
    meta = json.loads(path.read_text())
    novelty = (meta.get("policy") or {}).get("novelty")
    t0 = time.perf_counter()
    for _ in range(100):
        json.loads(path.read_text())
    read_ms = (time.perf_counter() - t0) * 10
    t0 = time.perf_counter()
    for _ in range(100):
        Policy.from_dict(json.loads(path.read_text())["policy"])
    load_ms = (time.perf_counter() - t0) * 10
    return {
        "meta_bytes": path.stat().st_size,
        "novelty_bytes": len(json.dumps(novelty)) if novelty else 0,
        "read_json_ms": round(read_ms, 3),
        "read_and_decode_policy_ms": round(load_ms, 3),
    }


def latency(seed: int, requests: int = 400) -> dict[str, object]:
    """In-process classify of one ticket on all 10,003 train rows, tuned with unknown rows: the policy
    with the novelty model against the same collection tuned without it, requests interleaved."""
    import numpy as np

    import knnclass.classifier as kc
    from knnclass.classifier import Classifier
    from knnclass.data import Example
    from knnclass.encoders import load_encoder
    from knnclass.store.edge import EdgeStore

    train, test = _read(DATA / "train.csv"), _read(DATA / "test.csv")
    held = set(random.Random(seed).sample(sorted({r["category"] for r in train}), 19))
    store = EdgeStore(Path(tempfile.mkdtemp(prefix="knnclass-openset-lat-")) / "store")
    try:
        enc = load_encoder()
        clf = Classifier(store, "c", enc)
        clf.index([Example(f"t{i}", r["text"], r["category"]) for i, r in enumerate(train)])
        val = [
            Example(f"v{i}", r["text"], "unknown" if r["category"] in held else r["category"])
            for i, r in enumerate(test[:1500])
        ]
        clf.tune(val, unknown_label="unknown")
        metas = {"with": clf.meta()}
        fit, kc.fit_novelty = kc.fit_novelty, lambda *a, **k: None
        try:
            clf.tune(val, unknown_label="unknown")
        finally:
            kc.fit_novelty = fit
        metas["without"] = clf.meta()
        ref = clf.ref()
        queries = [r["text"] for r in test[1500 : 1500 + requests]]
        times: dict[str, list[float]] = {"with": [], "without": []}
        for i, q in enumerate(queries * 2):
            for name in ("with", "without") if i % 2 else ("without", "with"):
                store.set_meta(ref, metas[name])
                t = time.perf_counter()
                clf.classify([q])
                times[name].append(time.perf_counter() - t)
        out: dict[str, object] = {
            name: {
                "classify_p50_ms": round(1e3 * float(np.median(v)), 3),
                "classify_p99_ms": round(1e3 * float(np.quantile(v, 0.99)), 3),
            }
            for name, v in times.items()
        }
        out["meta_bytes"] = {k: len(json.dumps(m.to_dict(), indent=2)) for k, m in metas.items()}
        out["n_indexed"] = store.count(ref)
        out["requests_each"] = len(times["with"])
        return out
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head", action="store_true", help="Also train, promote and score a transfer head.")
    ap.add_argument("--render", action="store_true", help="Only rewrite results/openset.md from openset.json.")
    ap.add_argument("--latency", action="store_true", help="Only measure the novelty model's classify cost.")
    ap.add_argument("--tuned", action="store_true", help="Also score the open set over a fully tuned encoder.")
    ap.add_argument("--tuned-epochs", type=int, default=3)
    ap.add_argument("--tuned-strategy", choices=["full", "contrastive"], default="full")
    ap.add_argument("--tuned-lr", default="", help="the tuned encoder's --lr (default: finetune's)")
    ap.add_argument("--tuned-only", action="store_true", help="Only the tuned rows, merged into results/openset.json.")
    args = ap.parse_args()
    key = "tuned" if args.tuned_strategy == "full" else f"tuned_{args.tuned_strategy}"
    if args.tuned_only:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        old = json.loads((OUT / "openset.json").read_text())
        tmp = Path(tempfile.mkdtemp(prefix="knnclass-openset-"))
        if protocol(tmp, old["seed"]) != old["protocol"]:
            raise SystemExit("openset.json was measured on another split")
        s = ["--store", str(tmp / "open")]
        knn("index", str(tmp / "index.csv"), *s)
        knn("tune", *s, "--validation", str(tmp / "val.csv"), "--unknown-label", "unknown")
        old[key] = tuned_open_set(tmp, s, args.tuned_epochs, args.tuned_strategy, args.tuned_lr)
        (OUT / "openset.json").write_text(json.dumps(old, indent=2))
        render(old)
        return
    if args.latency:
        old = json.loads((OUT / "openset.json").read_text())
        old["latency"] = latency(args.seed)
        (OUT / "openset.json").write_text(json.dumps(old, indent=2))
        render(old)
        return
    if args.render:
        render(json.loads((OUT / "openset.json").read_text()))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="knnclass-openset-"))
    res: dict[str, object] = {"protocol": protocol(tmp, args.seed), "seed": args.seed}

    s = ["--store", str(tmp / "open")]
    knn("index", str(tmp / "index.csv"), *s)
    knn("tune", *s, "--validation", str(tmp / "val.csv"), "--unknown-label", "unknown")
    res["open_default"] = _ev(tmp / "test.csv", *s)
    res["meta"] = _meta_size(tmp / "open")
    knn_before("tune", *s, "--validation", str(tmp / "val.csv"), "--unknown-label", "unknown")
    res["open_before"] = _ev(tmp / "test.csv", *s)
    for w in ("0.5", "0.25"):
        knn("tune", *s, "--validation", str(tmp / "val.csv"), "--unknown-label", "unknown", "--unknown-weight", w)
        res[f"open_weight_{w}"] = _ev(tmp / "test.csv", *s)
    knn("tune", *s)  # no unknown rows at all: familiarity floor from leave-one-out only
    res["open_no_unknown_rows"] = _ev(tmp / "test.csv", *s)

    c = ["--store", str(tmp / "closed")]
    knn("index", str(DATA / "train.csv"), *c)
    knn("tune", *c)
    res["closed_default"] = _ev(DATA / "test.csv", *c, unknown=False)
    res["closed_coverage_curve"] = coverage_at(c, DATA / "test.csv")
    off = json.loads(knn("classify", *c, "--json", *OFF_TOPIC))["predictions"]
    res["off_topic"] = [
        {"text": p["text"], "reason": p["reason"], "suggestion": p["suggestion"], "confidence": p["confidence"]}
        for p in off
    ]
    for target in (0.98, 0.99):
        knn("tune", *c, "--target-accuracy", str(target))
        res[f"closed_target_{target}"] = _ev(DATA / "test.csv", *c, unknown=False)

    if args.head:
        h = ["--store", str(tmp / "head")]
        run = tmp / "run-lr"
        knn("index", str(tmp / "closed_index.csv"), *h)
        knn("tune", *h)
        knn(
            "finetune",
            str(tmp / "closed_index.csv"),
            "--validation",
            str(tmp / "closed_val.csv"),
            "--strategy",
            "transfer",
            "--classifier",
            "logreg",
            "--out",
            str(run),
        )
        record = json.loads((run / "run.json").read_text())
        res["knn_on_same_index"] = _ev(DATA / "test.csv", *h, unknown=False)
        knn("promote", str(run), *h, "--rule", "head")
        res["head"] = {
            "run_head_accuracy_on_validation": record["validation"]["category"]["head"]["accuracy"],
            "served": _ev(tmp / "closed_val.csv", *h, unknown=False),
            "test": _ev(DATA / "test.csv", *h, unknown=False),
        }
    if args.tuned:
        res[key] = tuned_open_set(tmp, s, args.tuned_epochs, args.tuned_strategy, args.tuned_lr)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "openset.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    render(res)


def tuned_open_set(tmp: Path, store: list[str], epochs: int, strategy: str = "full", lr: str = "") -> dict[str, object]:
    """`strategy` tuning on the open set's index, promoted, re-tuned with unknown rows, scored on
    test with the default objective and `--unknown-weight 0.5`."""
    t0 = time.perf_counter()
    _write(tmp / "val_known.csv", [r for r in _read(tmp / "val.csv") if r["category"] != "unknown"])
    run = tmp / "run-full"
    knn(
        "finetune",
        str(tmp / "index.csv"),
        "--validation",
        str(tmp / "val_known.csv"),
        "--strategy",
        strategy,
        "--epochs",
        str(epochs),
        *(["--lr", lr] if lr else []),
        "--max-seq-length",
        "64",
        "--out",
        str(run),
    )
    trained = round(time.perf_counter() - t0, 1)
    knn("promote", str(run), *store)
    tune = ["tune", *store, "--validation", str(tmp / "val.csv"), "--unknown-label", "unknown"]
    knn(*tune)
    out: dict[str, object] = {"open_default": _ev(tmp / "test.csv", *store), "epochs": epochs, "train_seconds": trained}
    out |= {"strategy": strategy, "lr": lr or None}
    knn(*tune, "--unknown-weight", "0.5")
    out["open_weight_0.5"] = _ev(tmp / "test.csv", *store)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def render(res: dict[str, Any]) -> str:
    """The markdown section for RESULTS.md from a run's JSON (also written to results/openset.md)."""

    def f(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else "-"

    p = res["protocol"]
    lines = [
        f"Open set: {p['held_out_intents']} of 77 intents held out (seed {res['seed']}); {p['indexed']} known-intent "
        f"train rows indexed; validation {p['validation']} rows carved from train ({p['validation_unknown']} unknown); "
        f"test {p['test']} rows ({p['test_unknown']} unknown). Closed set: all 10,003 train rows indexed, "
        "tuned leave-one-out. Frozen default encoder.",
        "",
        "| case | accuracy | in-scope acc | unknown recall | AUROC | coverage | answered acc | guess acc | ECE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "open_default": "open set, default objective (validation with unknown rows: recall floor 0.75)",
        "open_before": "open set, default objective, without the novelty model (as before #15's last step)",
        "open_weight_0.5": "open set, `--unknown-weight 0.5` (balanced; the default before 2026-12-04)",
        "open_weight_0.25": "open set, `--unknown-weight 0.25` (the default before that)",
        "open_no_unknown_rows": "open set, no unknown rows (leave-one-out only)",
        "closed_default": "closed set, default",
        "closed_target_0.98": "closed set, `--target-accuracy 0.98`",
        "closed_target_0.99": "closed set, `--target-accuracy 0.99`",
        "knn_on_same_index": "closed set (90 % indexed), kNN vote",
    }

    def row(name: str, m: dict[str, Any]) -> str:
        return (
            f"| {name} | {f(m.get('accuracy'))} | {f(m.get('in_scope_accuracy'))} | {f(m.get('unknown_recall'))} | "
            f"{f(m.get('auroc_unknown'))} | {f(m.get('coverage'))} | {f(m.get('answered_accuracy'))} | "
            f"{f(m.get('guess_accuracy'))} | {f(m.get('ece'))} |"
        )

    for key, name in names.items():
        m = res.get(key)
        if isinstance(m, dict):
            lines.append(row(name, m))
    for tuned in (res.get("tuned"), res.get("tuned_contrastive")):
        if not isinstance(tuned, dict):
            continue
        how = "fully" if tuned.get("strategy", "full") == "full" else "contrastively"
        lr = f", lr {tuned['lr']}" if tuned.get("lr") else ""
        for key, what in (("open_default", "default objective"), ("open_weight_0.5", "`--unknown-weight 0.5`")):
            m = tuned.get(key)
            if isinstance(m, dict):
                name = f"open set, encoder {how} tuned ({tuned['epochs']} epochs{lr}; serves {m.get('source')}), {what}"
                lines.append(row(name, m))
    head = res.get("head")
    if isinstance(head, dict):
        t = head["test"]
        lines.append(
            f"| closed set (90 % indexed), promoted logreg head | {f(t['accuracy'])} | - | - | - | {f(t['coverage'])} | "
            f"{f(t['answered_accuracy'])} | {f(t['guess_accuracy'])} | {f(t['ece'])} |"
        )
        lines += [
            "",
            f"Promoted head served on its own validation rows: guess accuracy {head['served']['guess_accuracy']:.4f}, "
            f"the run's recorded head accuracy {head['run_head_accuracy_on_validation']:.4f}.",
        ]
    curve = res.get("closed_coverage_curve")
    if isinstance(curve, dict):
        lines += [
            "",
            "Closed set, on the test rows' own coverage curve (most confident first): "
            + ", ".join(f"{float(t):.0%} answered accuracy holds up to {v:.1%} coverage" for t, v in curve.items())
            + ".",
        ]
    meta = res.get("meta")
    if isinstance(meta, dict):
        lines += [
            "",
            f"Open-set version's meta.json: {meta['meta_bytes']:,} bytes, of which the novelty model (low-rank "
            f"Mahalanobis, float16/base64) {meta['novelty_bytes']:,}; reading it {meta['read_json_ms']} ms, "
            f"reading and decoding the policy {meta['read_and_decode_policy_ms']} ms (decoded model cached by digest).",
        ]
    lat = res.get("latency")
    if isinstance(lat, dict):
        w, wo = lat["with"], lat["without"]
        lines += [
            "",
            f"Classify cost of the novelty model (`--latency`: in-process, one ticket per call, {lat['n_indexed']:,} "
            f"examples, {lat['requests_each']} interleaved calls each): p50 {w['classify_p50_ms']} ms with it, "
            f"{wo['classify_p50_ms']} ms without (p99 {w['classify_p99_ms']} / {wo['classify_p99_ms']} ms); "
            f"meta.json {lat['meta_bytes']['with']:,} / {lat['meta_bytes']['without']:,} bytes.",
        ]
    off = res.get("off_topic", [])
    n_unknown = sum(o["reason"] == "unknown" for o in off)
    lines += [
        "",
        "Off-topic texts (gibberish, trivia, recipes) on the closed-set collection tuned without unknown rows: "
        f"{n_unknown} of {len(off)} abstained as `unknown`.",
        "",
        f"Command: `python benchmarks/openset.py --seed {res['seed']}{' --head' if 'head' in res else ''}"
        f"{' --tuned' if 'tuned' in res else ''}` ({res['seconds']} s"
        + (f"; tuning the encoder {res['tuned']['train_seconds']} s" if "tuned" in res else "")
        + ").",
    ]
    con = res.get("tuned_contrastive")
    if isinstance(con, dict):
        lines.append(
            f"Contrastive rows: `python benchmarks/openset.py --tuned-only --tuned-strategy contrastive"
            f"{' --tuned-lr ' + con['lr'] if con.get('lr') else ''}` (tuning the encoder {con['train_seconds']} s)."
        )
    md = "\n".join(lines)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "openset.md").write_text(md + "\n")
    print(md)
    return md


if __name__ == "__main__":
    main()
