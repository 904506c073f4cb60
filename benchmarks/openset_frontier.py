"""How far the default objective sits from the best trade-off the features allow (#15).

The open-set protocol of openset.py (seed 0, frozen default encoder, tuned on validation with
unknown rows). Each row's best guess, calibrated confidence and familiarity are kept; every pair
of floors (confidence >= a, familiarity >= b; 61 quantiles each) is one operating point. Reported
per split: the served point (the default objective's) and the best in-scope accuracy at each
unknown recall level (the frontier). On validation that is what an objective can pick from; on
test it is the ceiling for these features.

    python benchmarks/openset_frontier.py [--seed 0]
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

RECALLS = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9)


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
        "frontier": {f"{r:g}": round(max([i for i, rc in points if rc >= r] or [0.0]), 4) for r in RECALLS},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from knnclass.classifier import Classifier
    from knnclass.data import Example
    from knnclass.encoders import load_encoder
    from knnclass.store.edge import EdgeStore
    from knnclass.tuning import Objective

    tmp = Path(tempfile.mkdtemp(prefix="knnclass-frontier-"))
    res: dict[str, Any] = {"protocol": protocol(tmp, args.seed), "seed": args.seed}
    clf = Classifier(EdgeStore(tmp / "store"), "c", load_encoder())
    clf.index([Example(f"t{i}", r["text"], r["category"]) for i, r in enumerate(_read(tmp / "index.csv"))])
    val = [Example(f"v{i}", r["text"], r["category"]) for i, r in enumerate(_read(tmp / "val.csv"))]
    clf.tune(validation=val, unknown_label="unknown")
    for split in ("val", "test"):
        rows = _read(tmp / f"{split}.csv")
        preds, _, _ = clf.classify([r["text"] for r in rows])
        res[split] = frontier([r["category"] for r in rows], preds)
    # the operating point a user sets instead: `tune --target-unknown-recall 0.75`
    clf.tune(validation=val, unknown_label="unknown", objective=Objective(target_unknown_recall=0.75))
    rows = _read(tmp / "test.csv")
    preds, _, _ = clf.classify([r["text"] for r in rows])
    res["test_target_recall_0.75"] = frontier([r["category"] for r in rows], preds)["served"]
    head = " | ".join(f"recall ≥ {r:g}" for r in RECALLS)
    lines = [
        f"Command: `python benchmarks/openset_frontier.py --seed {args.seed}`. Open-set protocol as above; "
        "best in-scope accuracy at each unknown recall over floors on (confidence, familiarity), "
        "and the point the default objective serves.",
        "",
        f"| split | served: in-scope acc / unknown recall | {head} |",
        "| --- | --- | " + " | ".join("---" for _ in RECALLS) + " |",
    ]
    for split in ("val", "test"):
        s, f = res[split]["served"], res[split]["frontier"]
        lines.append(
            f"| {split} | {s['in_scope_accuracy']} / {s['unknown_recall']} | "
            + " | ".join(str(f[f"{r:g}"]) for r in RECALLS)
            + " |"
        )
    t = res["test_target_recall_0.75"]
    lines += [
        "",
        f"Tuned with `--target-unknown-recall 0.75` instead (same validation rows), test: in-scope accuracy "
        f"{t['in_scope_accuracy']}, unknown recall {t['unknown_recall']}.",
    ]
    save("openset-frontier", res, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
