"""Issue 16's demo: tickets as they are, derived from Banking77.

Writes a ticket-shaped file (id, subject, body, queue = intent, priority = the urgency map,
product, created_at) and measures:

- both label sets in one collection vs two separate collections (accuracy on the test split);
- classify of both sets vs one set (same tickets, same encoder; end to end and search+vote only);
- filtered neighbours, embedded store vs server backend (qdrant-client local mode);
- `knnclass classify --input --output` predictions joining back to the input by id;
- the same model copied to another folder accepted by the collection.

    nice -n 5 python benchmarks/tickets.py [--train N] [--test N] [--timed N]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, save

PRODUCTS = [
    ("cards", ("card", "pin", "contactless", "atm", "apple_pay", "cash_withdrawal", "virtual")),
    ("transfers", ("transfer", "beneficiary", "receiving_money", "exchange", "fiat", "currency")),
    ("topups", ("top_up", "topping_up", "cheque", "deposit")),
]


def product(category: str) -> str:
    for name, keys in PRODUCTS:
        if any(k in category for k in keys):
            return name
    return "account"


def created_at(ticket_id: str) -> str:
    """A deterministic date between 2026-01-01 and 2026-04-30."""
    day = int(hashlib.sha256(ticket_id.encode()).hexdigest()[:8], 16) % 120
    return time.strftime("%Y-%m-%d", time.gmtime(1767225600 + day * 86400))


def write_tickets(src: Path, out: Path, prefix: str, urgency: dict[str, str], limit: int | None) -> Path:
    rows = list(csv.DictReader(src.open()))[:limit]
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "subject", "body", "queue", "priority", "product", "created_at"])
        for i, r in enumerate(rows):
            tid = f"{prefix}{i:05d}"
            words = r["text"].split()
            subject = " ".join(words[:6]) + (" ..." if len(words) > 6 else "")
            cat = r["category"]
            w.writerow([tid, subject, r["text"], cat, urgency[cat], product(cat), created_at(tid)])
    return out


class Memo:
    """The encoder, remembering vectors (the accuracy runs embed the same texts several times)."""

    def __init__(self, enc: Any):
        self.enc = enc
        self.cache: dict[tuple[str, str], np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.enc, name)

    def embed(self, texts: list[str], long: str = "head") -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if (t, long) not in self.cache]
        if todo:
            for t, v in zip(todo, self.enc.embed(todo, long=long), strict=True):
                self.cache[(t, long)] = v
        return np.stack([self.cache[(t, long)] for t in texts]) if texts else self.enc.embed([], long=long)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=None, help="Train rows (default all 10003).")
    ap.add_argument("--test", type=int, default=None, help="Test rows (default all 3080).")
    ap.add_argument("--timed", type=int, default=400, help="Test tickets in the classify timing.")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from click.testing import CliRunner
    from qdrant_client import QdrantClient

    from knnclass.classifier import Classifier
    from knnclass.cli import cli
    from knnclass.data import TextSource, read_examples
    from knnclass.encoders import load_encoder
    from knnclass.store.base import Where
    from knnclass.store.edge import EdgeStore
    from knnclass.store.server import ServerStore
    from knnclass.text import TextSettings

    work = Path(tempfile.mkdtemp(prefix="knnclass-tickets-"))
    urgency = {r["category"]: r["urgency"] for r in csv.DictReader((DATA / "urgency.csv").open())}
    train_f = write_tickets(DATA / "train.csv", work / "train.csv", "T", urgency, args.train)
    test_f = write_tickets(DATA / "test.csv", work / "test.csv", "Q", urgency, args.test)
    source = TextSource(("subject", "body"))
    text = TextSettings(fields=source.fields)
    meta_cols = ("product", "created_at")
    sets = ["queue", "priority"]
    both_train = read_examples(train_f, source, sets, "id", meta_cols=meta_cols)
    both_test = read_examples(test_f, source, sets, "id", meta_cols=meta_cols)
    one = {s: read_examples(train_f, source, s, "id", meta_cols=meta_cols) for s in sets}
    one_test = {s: read_examples(test_f, source, s, "id", meta_cols=meta_cols) for s in sets}
    raw = load_encoder()
    enc = Memo(raw)
    store = EdgeStore(work / "store")
    result: dict[str, Any] = {"train": len(both_train), "test": len(both_test)}

    # --- both label sets in one collection vs two collections ---------------------------------
    t0 = time.perf_counter()
    both = Classifier(store, "both", encoder=enc)  # type: ignore[arg-type]
    both.index(both_train, text=text, label_sets=sets)
    result["index_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    both.tune_all()
    result["tune_both_s"] = round(time.perf_counter() - t0, 1)
    m_both = both.evaluate(both_test)["label_sets"]
    sep: dict[str, dict[str, Any]] = {}
    for s in sets:
        c = Classifier(store, s, encoder=enc)  # type: ignore[arg-type]
        c.index(one[s], text=text, label_sets=[s])
        c.tune()
        sep[s] = c.evaluate(one_test[s])
    result["accuracy"] = {
        s: {
            "one_collection": round(m_both[s]["accuracy"], 4),
            "separate": round(sep[s]["accuracy"], 4),
            "one_collection_macro_f1": round(m_both[s]["macro_f1"], 4),
            "separate_macro_f1": round(sep[s]["macro_f1"], 4),
            "diff_pt": round(100 * (m_both[s]["accuracy"] - sep[s]["accuracy"]), 2),
        }
        for s in sets
    }
    print(json.dumps(result["accuracy"], indent=1), flush=True)

    # --- classify both sets vs one set -------------------------------------------------------------
    texts = [e.text for e in both_test[: args.timed]]
    queue = Classifier(store, "queue", encoder=raw)
    two = Classifier(store, "both", encoder=raw)
    raw.embed(texts[:50])  # warm
    end: dict[str, list[float]] = {"one": [], "both": []}
    vote: dict[str, list[float]] = {"one": [], "both": []}
    vecs = raw.embed(texts)
    for _ in range(args.repeats):
        for name, c in (("one", queue), ("both", two)):
            t0 = time.perf_counter()
            c.classify(texts)
            end[name].append(time.perf_counter() - t0)
            ref = c.ref()
            meta = c.meta(ref)
            t0 = time.perf_counter()
            c.classify_vectors(vecs, ref, c.rule(meta), meta=meta)
            vote[name].append(time.perf_counter() - t0)
    med = {k: {n: statistics.median(v[n]) for n in v} for k, v in (("end_to_end", end), ("search_vote", vote))}
    result["classify"] = {
        "tickets": len(texts),
        **{
            k: {
                "one_set_ms": round(1000 * v["one"], 1),
                "both_sets_ms": round(1000 * v["both"], 1),
                "ratio": round(v["both"] / v["one"], 3),
            }
            for k, v in med.items()
        },
    }
    print(json.dumps(result["classify"], indent=1), flush=True)

    # --- filters: embedded vs server backend ---------------------------------------------------------
    server = ServerStore(client=QdrantClient(location=":memory:"))
    srv = Classifier(server, "both", encoder=enc)  # type: ignore[arg-type]
    srv.index(both_train, text=text, label_sets=sets)
    srv.store.set_meta(
        srv.ref(), srv.meta().with_(**{k: getattr(both.meta(), k) for k in ("rule", "tuning", "policy", "sets")})
    )
    filters = [["product=cards"], ["created_at>=2026-03-01"], ["created_at<2026-02-15", "product=transfers"]]
    q = [e.text for e in both_test[:200]]
    same: dict[str, Any] = {}
    for f in filters:
        w = Where.parse(f)
        a, _, _ = both.classify(q, where=w)
        b, _, _ = srv.classify(q, where=w)
        ids_equal = sum([n.id for n in x.neighbours] == [n.id for n in y.neighbours] for x, y in zip(a, b, strict=True))
        labels_equal = sum(
            {s: p.label for s, p in x.sets.items()} == {s: p.label for s, p in y.sets.items()}
            for x, y in zip(a, b, strict=True)
        )
        same[" AND ".join(f)] = {
            "queries": len(q),
            "identical_neighbours": ids_equal,
            "identical_answers": labels_equal,
        }
    result["filters"] = same
    print(json.dumps(same, indent=1), flush=True)
    server.close()

    # --- the CLI: predictions join back by id; the same model in another folder -------------------
    store.close()
    subset = work / "subset.csv"
    with test_f.open() as fi, subset.open("w", newline="") as fo:
        rows = list(csv.DictReader(fi))[:300]
        w = csv.DictWriter(fo, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = work / "pred.csv"
    st_args = ["--store", str(work / "store"), "--collection", "both"]
    r = CliRunner().invoke(cli, ["classify", "--input", str(subset), "--output", str(out), *st_args])
    if r.exit_code != 0:
        raise SystemExit(f"classify failed: {r.output}")
    # the same model copied to another folder: indexing more tickets with it is accepted
    copy = work / "elsewhere" / "minilm"
    shutil.copytree(raw.source, copy)
    more = work / "more.csv"
    with train_f.open() as fi, more.open("w", newline="") as fo:
        extra = list(csv.DictReader(fi))[:20]
        w = csv.DictWriter(fo, list(extra[0]))
        w.writeheader()
        w.writerows({**row, "id": "X" + row["id"]} for row in extra)
    cols = ["--text-col", "subject", "--text-col", "body", "--label-col", "queue", "--label-col", "priority"]
    idx = CliRunner().invoke(
        cli,
        [
            "index",
            str(more),
            *cols,
            "--id-col",
            "id",
            "--meta-col",
            "product",
            "--meta-col",
            "created_at",
            "--encoder",
            str(copy),
            *st_args,
        ],
    )
    pred = {p["id"]: p for p in csv.DictReader(out.open())}
    joined = [(row, pred.get(row["id"])) for row in rows]
    result["join"] = {
        "rows": len(rows),
        "joined_by_id": sum(p is not None for _, p in joined),
        "same_order": [p["id"] for p in csv.DictReader(out.open())] == [row["id"] for row in rows],
        "columns": list(next(iter(pred.values()))),
        "queue_accuracy": round(
            sum(p is not None and p["suggestion"] == row["queue"] for row, p in joined) / len(rows), 4
        ),
        "priority_accuracy": round(
            sum(p is not None and p["priority_suggestion"] == row["priority"] for row, p in joined) / len(rows), 4
        ),
    }
    with EdgeStore(work / "store") as st:
        stamp = st.get_meta(st.ref("both")).encoder
    result["model_copy"] = {
        "stamp": stamp,
        "copy_identity": load_encoder(copy).identity,
        "accepted": idx.exit_code == 0,
        "index_output": idx.output.strip().splitlines()[-1:],
    }
    result["model_copy"]["same_identity"] = result["model_copy"]["stamp"] == result["model_copy"]["copy_identity"]
    print(json.dumps({k: result[k] for k in ("join", "model_copy")}, indent=1), flush=True)

    acc = result["accuracy"]
    cl = result["classify"]
    table = [
        f"Banking77 as tickets: {result['train']} train / {result['test']} test rows; text = subject + body "
        "(`--text-col subject --text-col body`), label sets queue (77 intents) and priority (urgency map), "
        "metadata product (keyword) and created_at (datetime). all-MiniLM-L6-v2, embedded store, tuned leave-one-out.",
        "",
        "| label set | one collection, both sets | separate collection | difference |",
        "|---|---|---|---|",
        *(
            f"| {s} | {a['one_collection']:.4f} (macro-F1 {a['one_collection_macro_f1']:.4f}) | "
            f"{a['separate']:.4f} (macro-F1 {a['separate_macro_f1']:.4f}) | {a['diff_pt']:+.2f} pt |"
            for s, a in acc.items()
        ),
        "",
        f"Classify {cl['tickets']} tickets, median of {args.repeats} (2 shared CPU cores):",
        "",
        "| | one set (queue) | both sets | ratio |",
        "|---|---|---|---|",
        *(
            f"| {k.replace('_', ' ')} | {v['one_set_ms']} ms | {v['both_sets_ms']} ms | {v['ratio']:.3f}x |"
            for k, v in cl.items()
            if isinstance(v, dict)
        ),
        "",
        "Filtered classify (only matching neighbours vote), embedded store vs server backend "
        f"(qdrant-client local mode), {len(q)} test tickets:",
        "",
        "| filter | identical neighbour lists | identical answers (both sets) |",
        "|---|---|---|",
        *(
            f"| `{f}` | {v['identical_neighbours']}/{v['queries']} | {v['identical_answers']}/{v['queries']} |"
            for f, v in result["filters"].items()
        ),
        "",
        f"`knnclass classify --input FILE --output p.csv`: "
        f"{result['join']['joined_by_id']}/{result['join']['rows']} predictions join back by id, same order: "
        f"{result['join']['same_order']}; joined accuracy of the suggestions: queue {result['join']['queue_accuracy']:.4f}, "
        f"priority {result['join']['priority_accuracy']:.4f}. The model copied to another folder has the stamp's "
        f"identity ({result['model_copy']['same_identity']}) and `knnclass index --encoder COPY` into the "
        f"collection is accepted ({result['model_copy']['accepted']}).",
    ]
    save("tickets", result, "\n".join(table))
    print("\n".join(table))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
