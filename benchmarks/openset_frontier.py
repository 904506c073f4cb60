"""How far the default objective sits from the best trade-off the features allow (#15).

The open-set protocol of openset.py (seed 0, frozen default encoder, tuned on validation with
unknown rows). Each row's best guess, calibrated confidence and familiarity are kept; every pair
of floors (confidence >= a, familiarity >= b; 61 quantiles each) is one operating point. Reported
per split: the served point (the default objective's) and the best in-scope accuracy at each
unknown recall level (the frontier). On validation that is what an objective can pick from; on
test it is the ceiling for these features. With several --seeds (each a different quarter of
intents held out and a different validation carve), one row per seed of the test figures:
AUROC(unknown), the default's point, the frontier at recall 0.75 and the balanced weight's
point (`--unknown-weight 0.5`, the default before 2026-12-04), with their mean; then the points
that each fixed `--unknown-weight` of WEIGHTS serves, and on how many seeds they land in
#15's box (recall >= 0.75 at in-scope accuracy >= 0.85). The detailed table is the first seed's.

    python benchmarks/openset_frontier.py [--seeds 0 1 2 3 4]
Writes benchmarks/results/openset-frontier.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import save
from openset import _read, protocol

from knnclass.calibration import auroc

RECALLS = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9)
WEIGHTS = (0.25, 0.33, 0.4, 0.5)


def in_box(p: dict[str, float]) -> bool:
    return p["unknown_recall"] >= 0.75 and p["in_scope_accuracy"] >= 0.85


def frontier(truth: list[str], preds: list[Any]) -> dict[str, Any]:
    t = np.array(truth)
    unk = t == "unknown"
    right = (np.array([p.suggestion for p in preds]) == t) & ~unk
    conf = np.array([p.confidence for p in preds])
    fam = np.array([1.0 if p.familiarity is None else p.familiarity for p in preds])
    served = np.array([not p.abstained for p in preds])

    def point(answered: np.ndarray) -> tuple[float, float]:
        return float((right & answered).sum() / (~unk).sum()), float((~answered & unk).sum() / unk.sum())

    grid = np.linspace(0, 0.6, 61)
    points = [point((conf >= a) & (fam >= b)) for a in np.quantile(conf, grid) for b in np.quantile(fam, grid)]
    ins, rec = point(served)
    return {
        "served": {"in_scope_accuracy": round(ins, 4), "unknown_recall": round(rec, 4)},
        "auroc_unknown": round(auroc(-fam, unk), 4),
        "frontier": {f"{r:g}": round(max([i for i, rc in points if rc >= r] or [0.0]), 4) for r in RECALLS},
    }


def one_seed(seed: int) -> dict[str, Any]:
    """The frontier and the served points of one open-set split."""
    from knnclass.classifier import Classifier
    from knnclass.data import Example
    from knnclass.encoders import load_encoder
    from knnclass.store.edge import EdgeStore
    from knnclass.tuning import Objective

    tmp = Path(tempfile.mkdtemp(prefix="knnclass-frontier-"))
    res: dict[str, Any] = {"protocol": protocol(tmp, seed), "seed": seed}
    clf = Classifier(EdgeStore(tmp / "store"), "c", load_encoder())
    clf.index([Example(f"t{i}", r["text"], r["category"]) for i, r in enumerate(_read(tmp / "index.csv"))])
    val = [Example(f"v{i}", r["text"], r["category"]) for i, r in enumerate(_read(tmp / "val.csv"))]
    clf.tune(validation=val, unknown_label="unknown")
    for split in ("val", "test"):
        rows = _read(tmp / f"{split}.csv")
        preds, _, _ = clf.classify([r["text"] for r in rows])
        res[split] = frontier([r["category"] for r in rows], preds)
    # fixed weights instead, `tune --unknown-weight W` (0.5, balanced accuracy, was the default)
    rows = _read(tmp / "test.csv")
    vectors = clf.embed_texts([r["text"] for r in rows])
    ref = clf.ref()
    res["test_weights"] = {}
    for w in WEIGHTS:
        rule = clf.tune(validation=val, unknown_label="unknown", objective=Objective(unknown_weight=w)).best.rule
        preds = clf.classify_vectors(vectors, ref, rule)
        res["test_weights"][f"{w:g}"] = frontier([r["category"] for r in rows], preds)["served"]
    clf.store.close()
    return res


def render(runs: list[dict[str, Any]]) -> str:
    first = runs[0]
    seeds = " ".join(str(r["seed"]) for r in runs)
    head = " | ".join(f"recall ≥ {r:g}" for r in RECALLS)
    lines = [
        f"Command: `python benchmarks/openset_frontier.py --seeds {seeds}`. Open-set protocol as above; "
        "best in-scope accuracy at each unknown recall over floors on (confidence, familiarity), "
        f"and the point the default objective serves (seed {first['seed']}):",
        "",
        f"| split | served: in-scope acc / unknown recall | {head} |",
        "| --- | --- | " + " | ".join("---" for _ in RECALLS) + " |",
    ]
    for split in ("val", "test"):
        s, f = first[split]["served"], first[split]["frontier"]
        lines.append(
            f"| {split} | {s['in_scope_accuracy']} / {s['unknown_recall']} | "
            + " | ".join(str(f[f"{r:g}"]) for r in RECALLS)
            + " |"
        )
    t = first["test_weights"]["0.5"]
    lines += [
        "",
        f"Tuned with `--unknown-weight 0.5` instead (same validation rows), test: in-scope accuracy "
        f"{t['in_scope_accuracy']}, unknown recall {t['unknown_recall']}.",
    ]
    if len(runs) > 1:
        lines += [
            "",
            "Every seed (a different quarter of the intents held out), test rows: AUROC(unknown), and in-scope "
            "accuracy / unknown recall of the default objective, of the frontier's best point at recall ≥ 0.75, "
            "and of `--unknown-weight 0.5`:",
            "",
            "| seed | AUROC | default | frontier at recall ≥ 0.75 | balanced (weight 0.5) |",
            "| --- | --- | --- | --- | --- |",
        ]
        cols: list[list[float]] = []
        for r in runs:
            d, tr = r["test"]["served"], r["test_weights"]["0.5"]
            row = [
                r["test"]["auroc_unknown"],
                d["in_scope_accuracy"],
                d["unknown_recall"],
                r["test"]["frontier"]["0.75"],
                tr["in_scope_accuracy"],
                tr["unknown_recall"],
            ]
            cols.append(row)
            lines.append(f"| {r['seed']} | {row[0]} | {row[1]} / {row[2]} | {row[3]} | {row[4]} / {row[5]} |")
        m = [round(float(np.mean(c)), 4) for c in zip(*cols, strict=True)]
        lines.append(f"| mean | {m[0]} | {m[1]} / {m[2]} | {m[3]} | {m[4]} / {m[5]} |")
        lines += [
            "",
            "Each fixed `--unknown-weight` W (maximise (1 - W) x in-scope accuracy + W x unknown recall), test "
            "in-scope accuracy / unknown recall per seed, and the seeds in the box (recall ≥ 0.75 at in-scope "
            "accuracy ≥ 0.85); the default's row for comparison:",
            "",
            "| objective | " + " | ".join(f"seed {r['seed']}" for r in runs) + " | in the box |",
            "| --- | " + " | ".join("---" for _ in runs) + " | --- |",
        ]
        served = [("default (recall floor 0.75)", [r["test"]["served"] for r in runs])]
        served += [(f"weight {w:g}", [r["test_weights"][f"{w:g}"] for r in runs]) for w in WEIGHTS]
        for name, pts in served:
            cells = " | ".join(f"{p['in_scope_accuracy']} / {p['unknown_recall']}" for p in pts)
            lines.append(f"| {name} | {cells} | {sum(in_box(p) for p in pts)} of {len(pts)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runs = [one_seed(seed) for seed in args.seeds]
    text = render(runs)
    save("openset-frontier", {"runs": runs}, text)
    print(text)


if __name__ == "__main__":
    main()
