"""Tickets as e-mails: Banking77 wrapped by benchmarks/emails.py, cleaning off and on, in one run.

Three embedded collections with the default encoder, each tuned leave-one-out and scored
on its test set: the clean tickets (the baseline), the wrapped ones indexed as they come
(`--clean none`) and the wrapped ones with the default cleaning. Also the time cleaning
takes against the indexing time, and the p50 latency of a ~1,000-token ticket per
long-text strategy (embedding alone, and a whole classify with the collection's head rule).

    python benchmarks/cleaning.py [--train 4000] [--test 1540] [--seed 0]
Writes benchmarks/results/cleaning.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
DATA = REPO / "data" / "banking77"
OUT = REPO / "benchmarks" / "results"


def _sample(src: Path, dst: Path, n: int, seed: int) -> None:
    """A stratified sample of `n` rows (all rows when n is 0 or larger than the file)."""
    with src.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if 0 < n < len(rows):
        rng = random.Random(seed)
        by: dict[str, list[dict[str, str]]] = {}
        for r in rows:
            by.setdefault(r["category"], []).append(r)
        per = max(1, n // len(by))
        rows = [r for cat in sorted(by) for r in rng.sample(by[cat], min(per, len(by[cat])))]
    with dst.open("w", newline="") as f:
        w = csv.DictWriter(f, ["text", "category"])
        w.writeheader()
        w.writerows({"text": r["text"], "category": r["category"]} for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=4000, help="train tickets indexed (0: all 10,003)")
    ap.add_argument("--test", type=int, default=1540, help="test tickets scored (0: all 3,080)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--long", type=int, default=20, help="~1,000-token tickets timed per strategy")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from emails import wrap_file

    from knnclass import Classifier
    from knnclass.cleaning import clean_texts
    from knnclass.data import read_examples
    from knnclass.encoders import load_encoder
    from knnclass.store.edge import EdgeStore
    from knnclass.text import TextSettings, prepare

    tmp = Path(tempfile.mkdtemp(prefix="knnclass-cleaning-"))
    _sample(DATA / "train.csv", tmp / "train.csv", args.train, args.seed)
    _sample(DATA / "test.csv", tmp / "test.csv", args.test, args.seed + 1)
    wrap_file(tmp / "train.csv", tmp / "wtrain.csv", seed=args.seed)
    wrap_file(tmp / "test.csv", tmp / "wtest.csv", seed=args.seed + 1)
    enc = load_encoder()
    cases = {
        "clean tickets": ("train.csv", "test.csv", "none"),
        "e-mails, cleaning off": ("wtrain.csv", "wtest.csv", "none"),
        "e-mails, default cleaning": ("wtrain.csv", "wtest.csv", "email"),
    }
    res: dict[str, object] = {"train": args.train, "test": args.test, "seed": args.seed}
    rows = {}
    for name, (tr, te, mode) in cases.items():
        train = read_examples(tmp / tr, "text", "category")
        test = read_examples(tmp / te, "text", "category")
        clf = Classifier(EdgeStore(tmp / f"store-{len(rows)}"), "tickets", encoder=enc)
        t0 = time.perf_counter()
        clf.index(train, text=TextSettings(clean=mode))
        t_index = time.perf_counter() - t0
        clf.tune()
        m = clf.evaluate(test)
        prep = prepare(enc, [e.text for e in test], TextSettings(clean=mode)).shortened
        rows[name] = {
            "accuracy": m["accuracy"],
            "guess_accuracy": m["guess_accuracy"],
            "macro_f1": m["macro_f1"],
            "index_s": round(t_index, 2),
            "test_shortened": sum(prep) / len(prep),
            "indexed": len(train),
            "scored": len(test),
        }
        clf.store.close()
    res["cases"] = rows
    wtexts = [e.text for e in read_examples(tmp / "wtrain.csv", "text", "category")]
    t0 = time.perf_counter()
    clean_texts(wtexts, "email")
    t_clean = time.perf_counter() - t0
    plain = [e.text for e in read_examples(tmp / "train.csv", "text", "category")]
    t0 = time.perf_counter()
    clean_texts(plain, "email")
    t_plain = time.perf_counter() - t0
    res["cleaning"] = {
        "emails_s": round(t_clean, 3),
        "per_email_ms": round(1e3 * t_clean / len(wtexts), 4),
        "per_plain_ticket_ms": round(1e3 * t_plain / len(plain), 4),
        "share_of_indexing": round(t_clean / rows["e-mails, default cleaning"]["index_s"], 4),
    }
    base = rows["clean tickets"]["accuracy"]
    res["gap_points"] = {k: round(100 * (v["accuracy"] - base), 2) for k, v in rows.items()}

    # ~1,000-token tickets: several test tickets of one intent run together, as long e-mails do
    test_rows = list(csv.DictReader((DATA / "test.csv").open(newline="")))
    long_texts = []
    rng = random.Random(args.seed)
    while len(long_texts) < args.long:
        parts: list[str] = []
        while enc.count_tokens([" ".join(parts)])[0] < 1000:
            parts.append(rng.choice(test_rows)["text"])
        long_texts.append(" ".join(parts))
    res["long_tokens_mean"] = statistics.mean(enc.count_tokens(long_texts))
    lat: dict[str, dict[str, float]] = {}
    for strategy in ("head", "head_tail", "chunk"):
        enc.embed(long_texts[:2], long=strategy)  # warm
        times = []
        for t in long_texts:
            t0 = time.perf_counter()
            enc.embed([t], long=strategy)
            times.append(1e3 * (time.perf_counter() - t0))
        clf = Classifier(EdgeStore(tmp / f"long-{strategy}"), "tickets", encoder=enc)
        clf.index(read_examples(tmp / "train.csv", "text", "category")[:500], text=TextSettings(long=strategy))
        clf.tune()
        ctimes = []
        for t in long_texts:
            t0 = time.perf_counter()
            clf.classify([t])
            ctimes.append(1e3 * (time.perf_counter() - t0))
        clf.store.close()
        lat[strategy] = {
            "embed_p50_ms": round(statistics.median(times), 2),
            "classify_p50_ms": round(statistics.median(ctimes), 2),
        }
    res["long_ticket_latency"] = lat

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cleaning.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    md = ["| case | test accuracy | vs clean (pt) | shortened | index s |", "|---|---|---|---|---|"]
    for k, v in rows.items():
        md.append(
            f"| {k} | {v['accuracy']:.4f} | {res['gap_points'][k]:+.2f} | {v['test_shortened']:.3f} | {v['index_s']} |"
        )  # type: ignore[index]
    md += ["", "| long-text strategy | embed p50 ms | classify p50 ms |", "|---|---|---|"]
    md += [f"| {k} | {v['embed_p50_ms']} | {v['classify_p50_ms']} |" for k, v in lat.items()]
    (OUT / "cleaning.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
