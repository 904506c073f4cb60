"""Banking77 end to end through the CLI: index train, tune (leave-one-out), evaluate test.

Runs the 77-intent and the urgent/not_urgent (label-mapped) cases on a fresh embedded
store, checks that re-indexing keeps the count, prints JSON and a markdown table, and
writes benchmarks/results/spine.{json,md}.

    python benchmarks/spine.py [--store DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "banking77"
OUT = REPO / "benchmarks" / "results"


def knn(*args: str) -> tuple[str, float, str]:
    cmd = ["knnclass", *(a.replace(str(REPO) + "/", "") for a in args)]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "knnclass", *args], capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
    return r.stdout, dt, " ".join(cmd)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    store = Path(args.store or tempfile.mkdtemp(prefix="knnclass-spine-")) / "store"
    shutil.rmtree(store, ignore_errors=True)
    s = ["--store", str(store)]
    train, test, umap = (str(DATA / "train.csv"), str(DATA / "test.csv"), str(DATA / "urgency.csv"))
    res: dict[str, object] = {}
    commands = []

    _, t_index, c = knn("index", train, *s)
    commands.append(c)
    _, t_reindex, c = knn("index", train, *s)
    commands.append(c)
    info = json.loads(knn("info", *s, "--json")[0])
    tuned_out, t_tune, c = knn("tune", *s, "--json")
    commands.append(c)
    tuned = json.loads(tuned_out)
    ev_out, t_eval, c = knn("evaluate", test, *s, "--json")
    commands.append(c)
    ev = json.loads(ev_out)
    res["intent"] = {
        "count_after_two_index_runs": info["count"],
        "index_seconds": round(t_index, 1),
        "index_examples_per_s": round(info["count"] / t_index, 1),
        "reindex_seconds": round(t_reindex, 1),
        "tune_seconds": round(t_tune, 1),
        "tuned_rule": tuned["best"],
        "loo_accuracy": tuned["best"]["score"],
        "test_n": ev["n"],
        "test_accuracy": ev["accuracy"],
        "test_macro_f1": ev["macro_f1"],
        "evaluate_seconds": round(t_eval, 1),
    }
    u = ["--collection", "urgency"]
    commands.append(knn("index", train, *s, *u, "--label-map", umap)[2])
    tuned_u = json.loads(knn("tune", *s, *u, "--json")[0])
    commands.append(f"knnclass tune --store {store} --collection urgency --json")
    ev_u = json.loads(knn("evaluate", test, *s, *u, "--label-map", umap, "--json")[0])
    commands.append(f"knnclass evaluate {test} --store {store} --collection urgency --label-map {umap} --json")
    res["urgency"] = {
        "tuned_rule": tuned_u["best"],
        "test_accuracy": ev_u["accuracy"],
        "f1_urgent": ev_u["per_class"]["urgent"]["f1"],
        "precision_urgent": ev_u["per_class"]["urgent"]["precision"],
        "recall_urgent": ev_u["per_class"]["urgent"]["recall"],
    }
    res["encoder"] = info["encoder"]
    res["commands"] = [c.replace(str(REPO) + "/", "") for c in commands]
    commands = res["commands"]
    print(json.dumps(res, indent=2))
    i, g = res["intent"], res["urgency"]
    assert isinstance(i, dict) and isinstance(g, dict)
    rule = i["tuned_rule"]
    size = f"k={int(rule['value'])}" if rule["size"] == "k" else f"top {rule['value']}% (k={rule['k']})"
    urule = g["tuned_rule"]
    usize = f"k={int(urule['value'])}" if urule["size"] == "k" else f"top {urule['value']}% (k={urule['k']})"
    md = [
        "| case | tuned rule (leave-one-out) | LOO accuracy | test accuracy | macro-F1 / F1(urgent) | goal |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| 77 intents | {rule['vote']} {size} | {i['loo_accuracy']:.4f} | **{i['test_accuracy']:.4f}** | "
        f"{i['test_macro_f1']:.4f} | accuracy ≥ 0.920 |",
        f"| urgent / not_urgent | {urule['vote']} {usize} | {urule['score']:.4f} | {g['test_accuracy']:.4f} | "
        f"**{g['f1_urgent']:.4f}** (P {g['precision_urgent']:.3f}, R {g['recall_urgent']:.3f}) | F1(urgent) ≥ 0.95 |",
        "",
        f"Count after indexing train.csv twice: **{i['count_after_two_index_runs']}** (goal 10,003). "
        f"Index {i['index_seconds']} s ({i['index_examples_per_s']}/s, embedding + upsert + HNSW build), "
        f"re-index {i['reindex_seconds']} s, leave-one-out tuning {i['tune_seconds']} s, "
        f"evaluate {i['test_n']} tickets {i['evaluate_seconds']} s (process start and encoder load included). "
        f"Encoder `{res['encoder']}`.",
        "",
        "Commands:",
        "",
        "```",
        *commands,
        "```",
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "spine.json").write_text(json.dumps(res, indent=2))
    (OUT / "spine.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
