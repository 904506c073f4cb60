"""The Banking77 report and a flipped-label suspects run on the full 10,003 training tickets.

Writes the report (report.md + PNGs) to docs/img/, the figures to
benchmarks/results/reports.{json,md}.

    python benchmarks/reports.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import DATA, REPO, save

from tests.integration.test_suspects import flipped


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from knnclass.classifier import Classifier
    from knnclass.data import read_examples, read_label_map
    from knnclass.encoders import load_encoder
    from knnclass.reports import find_suspects, write_report
    from knnclass.store.edge import EdgeStore

    enc = load_encoder(None)
    work = Path(tempfile.mkdtemp(prefix="knnclass-reports-"))
    train, test = read_examples(DATA / "train.csv"), read_examples(DATA / "test.csv")
    res: dict[str, Any] = {"command": "python benchmarks/reports.py"}
    out = REPO / "docs" / "img"
    shutil.rmtree(out, ignore_errors=True)

    st = EdgeStore(work / "store")
    clf = Classifier(st, "tickets", encoder=enc)
    clf.index(train)
    clf.tune()
    res["intent_report"] = write_report(clf, test, out / "intent")
    umap = read_label_map(DATA / "urgency.csv")
    u = Classifier(st, "urgency", encoder=enc)
    u.index(read_examples(DATA / "train.csv", label_map=umap))
    u.tune()
    res["urgency_report"] = write_report(u, read_examples(DATA / "test.csv", label_map=umap), out / "urgency", "urgent")

    noisy, flips = flipped(train, 0.05, seed=77)
    f = Classifier(st, "flipped", encoder=enc)
    f.index(noisy)
    t0 = time.perf_counter()
    found = find_suspects(f, k=10, limit=2 * len(flips))
    took = time.perf_counter() - t0
    hit = {s.id for s in found} & flips
    res["suspects"] = {
        "n": len(noisy),
        "flipped": len(flips),
        "top": len(found),
        "found": len(hit),
        "recall_in_top_2x": len(hit) / len(flips),
        "precision_in_top_2x": len(hit) / len(found),
        "seconds": round(took, 1),
    }
    st.close()
    for r in (res["intent_report"], res["urgency_report"]):
        r["out"] = str(Path(r["out"]).relative_to(REPO))
    print(json.dumps(res, indent=2))
    s = res["suspects"]
    table = "\n".join(
        [
            f"Command: `{res['command']}`.",
            "",
            "| run | figure |",
            "| --- | --- |",
            f"| 77-intent report on test (docs/img/intent/report.md) | accuracy {res['intent_report']['accuracy']:.4f}, macro-F1 {res['intent_report']['macro_f1']:.4f}, k={res['intent_report']['k']} |",
            f"| urgency report on test (docs/img/urgency/report.md) | accuracy {res['urgency_report']['accuracy']:.4f}, macro-F1 {res['urgency_report']['macro_f1']:.4f} |",
            f"| suspects on train with 5 % labels flipped (seed 77) | {s['found']} of {s['flipped']} flipped found in the top {s['top']} "
            f"(recall **{s['recall_in_top_2x']:.3f}**, precision {s['precision_in_top_2x']:.3f}), {s['seconds']} s; goal recall ≥ 0.70 |",
        ]
    )
    save("reports", res, table)
    print(table)


if __name__ == "__main__":
    main()
