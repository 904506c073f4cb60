"""CLI: --label-col repeated, --meta-col, --where, --label-set (fake encoder in place of MiniLM)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from knnclass.cli import cli
from knnclass.encoders import FakeEncoder

from .._tickets import LABEL_SETS, META_COLS, TICKET_COLS

TOPICS = ["card", "transfer", "pin", "refund"]
URGENT = {"card", "pin"}


@pytest.fixture(autouse=True)
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    import knnclass.encoders as encoders

    monkeypatch.setattr(encoders, "load_encoder", lambda *a, **kw: FakeEncoder(topics=TOPICS))


def _write(path: Path, n: int = 12, test: bool = False) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "subject", "body", "queue", "priority", "product", "created_at"])
        for t in TOPICS:
            for i in range(n):
                prio = "" if i == 3 and not test else ("urgent" if t in URGENT else "normal")
                queue = t if i % 2 == 0 or test else "general"
                date = f"2026-0{3 if i % 2 == 0 or test else 2}-1{i % 10}"
                w.writerow(
                    [
                        f"{'q' if test else 't'}{t}{i}",
                        f"{t} help",
                        f"about {t} {i} {i * 3 % 7}",
                        queue,
                        prio,
                        ["cards", "loans"][i % 2],
                        date,
                    ]
                )
    return path


def run(*args: str) -> str:
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 0, (r.output, r.exception)
    return r.stdout


def test_index_tune_evaluate_classify_with_sets_and_filters(tmp_path: Path) -> None:
    store = ["--store", str(tmp_path / "s")]
    src = _write(tmp_path / "t.csv")
    out = run("index", str(src), *TICKET_COLS, *LABEL_SETS, *META_COLS, *store)
    assert "priority (44 labelled)" in out and "product (keyword), created_at (datetime)" in out
    out = run("tune", *store)
    assert "label set priority:" in out
    test = _write(tmp_path / "test.csv", 4, test=True)
    m = json.loads(run("evaluate", str(test), "--id-col", "id", "--json", *store))
    assert set(m["label_sets"]) == {"queue", "priority"} and m["label_sets"]["priority"]["accuracy"] >= 0.9
    after = json.loads(run("evaluate", str(test), "--json", "--where", "created_at>=2026-03-01", *store))
    assert after["accuracy"] >= m["accuracy"] and after["where"] == {"created_at": {"gte": "2026-03-01"}}
    pred = tmp_path / "p.csv"
    run(
        "classify",
        "--input",
        str(test),
        "--output",
        str(pred),
        "--where",
        "created_at>=2026-03-01",
        "--where",
        "product=cards",
        *store,
    )
    rows = list(csv.DictReader(pred.open()))
    assert [r["id"] for r in rows] == [f"q{t}{i}" for t in TOPICS for i in range(4)]
    assert all(r["priority_suggestion"] == ("urgent" if r["queue"] in URGENT else "normal") for r in rows)
    assert all(r["label"] != "general" for r in rows)
    js = json.loads(run("classify", "card help", "--json", *store))
    assert set(js["predictions"][0]["labels"]) == {"queue", "priority"}
    sus = json.loads(run("suspects", "--label-set", "priority", "--json", *store))
    assert isinstance(sus, list)
    r = CliRunner().invoke(cli, ["classify", "card", "--where", "tier=gold", *store])
    assert r.exit_code != 0 and "unknown metadata column 'tier'" in r.output
    r = CliRunner().invoke(cli, ["classify", "card", "--where", "created_at>=soon", *store])
    assert r.exit_code != 0 and "'created_at' holds dates" in r.output
    r = CliRunner().invoke(cli, ["index", str(src), "--label-col", "queue", *store])
    assert r.exit_code != 0 and "label sets queue, priority" in r.output


def test_promote_keeps_both_label_sets_and_filters(tmp_path: Path) -> None:
    store = ["--store", str(tmp_path / "s")]
    src = _write(tmp_path / "t.csv")
    run("index", str(src), *TICKET_COLS, *LABEL_SETS, *META_COLS, *store)
    run("tune", *store)
    rundir = tmp_path / "run"  # a transfer run: the frozen (here: fake) encoder, validation of both tasks
    rundir.mkdir()
    with (rundir / "validation.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "queue", "priority"])
        for t in TOPICS:
            w.writerow([f"{t} help\n\nabout {t}", t, "urgent" if t in URGENT else "normal"])
    info = {"format": 1, "strategy": "transfer", "tasks": ["queue", "priority"], "encoder": str(tmp_path)}
    (rundir / "run.json").write_text(json.dumps(info))
    out = run("promote", str(rundir), *store)
    assert "v1 -> v2" in out and "label set priority:" in out
    js = json.loads(run("classify", "pin help", "--where", "product=cards", "--json", *store))
    p = js["predictions"][0]
    assert set(p["labels"]) == {"queue", "priority"} and p["labels"]["priority"]["suggestion"] == "urgent"
    # the run with a queue head: `--rule ensemble` serves the head blended with the vote
    from sklearn.linear_model import LogisticRegression

    from knnclass.jobs.head import Head, save_heads

    texts = [f"about {t} {i}" for t in TOPICS for i in range(6)]  # the queue labels as indexed
    queues = [t if i % 2 == 0 else "general" for t in TOPICS for i in range(6)]
    est = LogisticRegression().fit(FakeEncoder(topics=TOPICS).embed(texts), queues)
    head = Head.from_sklearn("queue", est)
    assert head is not None
    save_heads(rundir / "heads.npz", [head])
    (rundir / "run.json").write_text(json.dumps({**info, "heads": "heads.npz"}))
    out = run("promote", str(rundir), "--rule", "ensemble", *store)
    assert "v2 -> v3" in out and "serving ensemble (head share 0." in out
    js = json.loads(run("classify", "pin help", "--json", *store))
    assert js["predictions"][0]["source"] == "ensemble"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_export_data_carries_label_sets_and_metadata_and_indexes_back(tmp_path: Path, suffix: str) -> None:
    from knnclass.store.edge import EdgeStore

    src = _write(tmp_path / "t.csv")
    a, b = tmp_path / "a", tmp_path / "b"
    run("index", str(src), *TICKET_COLS, *LABEL_SETS, *META_COLS, "--store", str(a))
    out = tmp_path / f"x{suffix}"
    run("export-data", "--output", str(out), "--store", str(a))
    if suffix == ".csv":
        header = next(csv.reader(out.open()))
        assert header == ["id", "text", "queue", "priority", "product", "created_at"]
    run("index", str(out), "--text-col", "text", "--id-col", "id", *LABEL_SETS, *META_COLS, "--store", str(b))

    def stored(path: Path) -> dict[str, tuple[str, str, dict[str, str], dict[str, object]]]:
        st = EdgeStore(path)
        try:
            return {e.id: (e.text, e.label, e.labels, e.meta) for ex, _ in st.scroll(st.ref("tickets")) for e in ex}
        finally:
            st.close()

    before, after = stored(a), stored(b)
    assert len(before) == 4 * 12 and after == before
    assert sum("priority" not in v[2] for v in before.values()) == 4  # a row without a priority stays without
