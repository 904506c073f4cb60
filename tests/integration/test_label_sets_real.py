"""Issue 16 with the real encoder and the real embedded store: two label sets, metadata filters,
the same neighbours on both backends, and the CLI joining predictions back by id."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from knnclass.cli import cli

from .._tickets import LABEL_SETS, META_COLS, TICKET_COLS

CATS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "cancel_transfer", "pin_blocked"]


def _tickets(data_dir: Path, split: str, per: int, path: Path) -> Path:
    urgency = {r["category"]: r["urgency"] for r in csv.DictReader((data_dir / "urgency.csv").open())}
    rows = [r for r in csv.DictReader((data_dir / f"{split}.csv").open()) if r["category"] in CATS]
    seen: dict[str, int] = {}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "subject", "body", "queue", "priority", "product", "created_at"])
        for r in rows:
            n = seen[r["category"]] = seen.get(r["category"], 0) + 1
            if n > per:
                continue
            tid = f"{split[:2]}-{r['category']}-{n}"
            product = "cards" if "card" in r["category"] or "pin" in r["category"] else "transfers"
            w.writerow(
                [
                    tid,
                    " ".join(r["text"].split()[:5]),
                    r["text"],
                    r["category"],
                    urgency[r["category"]],
                    product,
                    f"2026-0{1 + n % 4}-0{1 + n % 9}",
                ]
            )
    return path


def _run(*args: str) -> str:
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 0, r.output
    return r.stdout


def test_two_label_sets_and_filters_end_to_end(tmp_path: Path, data_dir: Path, real_encoder: Any) -> None:
    train = _tickets(data_dir, "train", 24, tmp_path / "train.csv")
    test = _tickets(data_dir, "test", 6, tmp_path / "test.csv")
    store = ["--store", str(tmp_path / "s")]
    _run("index", str(train), *TICKET_COLS, *LABEL_SETS, *META_COLS, *store)
    _run("tune", *store)
    m = json.loads(_run("evaluate", str(test), "--id-col", "id", "--json", *store))
    assert set(m["label_sets"]) == {"queue", "priority"}
    assert m["label_sets"]["queue"]["accuracy"] > 0.8 and m["label_sets"]["priority"]["accuracy"] > 0.8
    out = tmp_path / "p.jsonl"
    _run("classify", "--input", str(test), "--output", str(out), "--where", "product=cards", *store)
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["id"] for r in csv.DictReader(test.open())]
    assert [p["id"] for p in preds] == ids and all("priority_label" in p for p in preds)
    stored_products = {r["id"]: r["product"] for r in csv.DictReader(train.open())}
    for p in preds:
        assert all(stored_products[n.split(":")[0]] == "cards" for n in p["neighbours"].split(";") if n)

    # the same filtered neighbours from the server backend, given the same vectors
    from qdrant_client import QdrantClient

    from knnclass.classifier import Classifier
    from knnclass.data import read_examples
    from knnclass.store.base import Where
    from knnclass.store.edge import EdgeStore
    from knnclass.store.server import ServerStore

    with EdgeStore(tmp_path / "s") as edge:
        ref = edge.ref("tickets")
        examples, vectors = [], []
        for batch, vecs in edge.scroll(ref, with_vectors=True):
            examples += batch
            vectors.append(vecs)
        server = ServerStore(client=QdrantClient(location=":memory:"))
        sref = server.create("tickets", edge.get_meta(ref))
        import numpy as np

        server.upsert(sref, examples, np.concatenate(vectors))
        texts = [e.text for e in read_examples(test, ("subject", "body"), "queue", "id")]
        q = real_encoder.embed(texts)
        for f in (["product=cards"], ["created_at>=2026-03-01"], ["created_at<2026-03-01", "product=transfers"]):
            w = Where.parse(f)
            a = [[h.id for h in row] for row in edge.search(ref, q, 10, where=w)]
            b = [[h.id for h in row] for row in server.search(sref, q, 10, where=w)]
            assert a == b, f
        p, _, _ = Classifier(server, "tickets", encoder=real_encoder).classify(
            texts[:3], where=Where.parse(["product=cards"])
        )
        assert set(p[0].sets) == {"queue", "priority"}
        server.close()


def test_multi_task_run_on_composed_text_feeds_the_same_collection(
    tmp_path: Path, data_dir: Path, real_encoder: Any
) -> None:
    """finetune reads subject + body and both label columns; promote serves both sets from the run."""
    train = _tickets(data_dir, "train", 12, tmp_path / "train.csv")
    store = ["--store", str(tmp_path / "s")]
    _run("index", str(train), *TICKET_COLS, *LABEL_SETS, *META_COLS, *store)
    _run("tune", *store)
    run = tmp_path / "run"
    _run("finetune", str(train), "--strategy", "transfer", *TICKET_COLS[:4], *LABEL_SETS, "--out", str(run))
    rows = list(csv.DictReader((run / "validation.csv").open()))
    assert rows and all(r["text"].count("\n\n") >= 1 for r in rows)  # the composed text, as indexed
    res = json.loads(_run("promote", str(run), "--json", *store))
    assert set(res["label_sets"]) == {"queue", "priority"}
    assert res["label_sets"]["priority"]["mode"] == "validation"
    js = json.loads(_run("classify", "my card has not arrived yet", "--where", "product=cards", "--json", *store))
    labels = js["predictions"][0]["labels"]
    assert labels["queue"]["suggestion"] == "card_arrival" and labels["priority"]["suggestion"]
