"""Cleaning and long tickets with the real encoder: the clean command, and CLI == HTTP for a long e-mail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from knnclass.cli import cli

pytestmark = pytest.mark.usefixtures("real_encoder")

EMAIL = (Path(__file__).parents[1] / "data" / "emails" / "short_thread.txt").read_text()


def test_clean_command_shows_what_the_encoder_sees(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    import csv

    with f.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows([["body"], [EMAIL], ["<p>Hello,</p><p>my <b>pin</b> is blocked</p>"]])
    r = CliRunner().invoke(cli, ["clean", str(f), "--text-col", "body", "--json", "--store", str(tmp_path / "none")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert rows[0]["clean_text"] == "my card problem is back again, please help"
    assert rows[1]["clean_text"] == "my pin is blocked"
    assert all(not row["shortened"] for row in rows)
    r = CliRunner().invoke(cli, ["clean", str(f), "--text-col", "nope", "--store", str(tmp_path / "none")])
    assert r.exit_code != 0 and "no text column 'nope'" in r.output


def test_cli_and_http_give_the_same_answer_for_a_long_ticket(tmp_path: Path, data_dir: Path) -> None:
    import csv

    from fastapi.testclient import TestClient

    from knnclass.classifier import Classifier
    from knnclass.encoders import load_encoder
    from knnclass.service.app import create_app
    from knnclass.store.edge import EdgeStore

    rows = list(csv.DictReader((data_dir / "train.csv").open()))[::20]
    src = tmp_path / "train.csv"
    with src.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows(rows)
    store = ["--store", str(tmp_path / "store")]
    r = CliRunner()
    assert r.invoke(cli, ["index", str(src), "--long-text", "chunk", *store]).exit_code == 0
    assert r.invoke(cli, ["tune", *store]).exit_code == 0
    # ~1,000 tokens: an e-mail whose request comes after a long story
    story = " ".join(row["text"] for row in rows[:60] if row["category"] == rows[0]["category"]) or rows[0]["text"]
    long = ("I have been a customer for years and want to explain everything. " * 60) + story
    res = r.invoke(cli, ["classify", long, "--json", *store])
    assert res.exit_code == 0, res.output
    cli_pred = json.loads(res.stdout)["predictions"][0]
    assert cli_pred["shortened"] is True
    clf = Classifier(EdgeStore(tmp_path / "store"), "tickets", encoder_loader=lambda _src: load_encoder())
    with TestClient(create_app(clf)) as c:
        http_pred = c.post("/v1/classify", json={"text": long}).json()["predictions"][0]
        refused = c.post("/v1/classify", json={"text": long, "truncate": False})
    assert refused.status_code == 422
    for key in ("label", "suggestion", "reason", "shortened", "source"):
        assert http_pred[key] == cli_pred[key], key
    assert http_pred["confidence"] == pytest.approx(cli_pred["confidence"], abs=1e-6)
    assert [n["id"] for n in http_pred["neighbours"]] == [n["id"] for n in cli_pred["neighbours"]]


def test_tickets_with_subject_body_and_ids_join_back(tmp_path: Path, data_dir: Path) -> None:
    import csv

    rows = list(csv.DictReader((data_dir / "train.csv").open()))[::40]
    src = tmp_path / "tickets.tsv"
    with src.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["Ticket_ID", "Subject", "Body", "Queue", "product"])
        for i, r in enumerate(rows):
            w.writerow([f"T-{i}", r["text"].split()[0], r["text"], r["category"], "cards" if i % 2 else "loans"])
    store = ["--store", str(tmp_path / "store")]
    r = CliRunner()
    args = ["index", str(src), "--text-col", "subject", "--text-col", "body", "--label-col", "queue"]
    res = r.invoke(cli, [*args, "--id-col", "ticket_id", *store])
    assert res.exit_code == 0, res.output
    assert f"{len(rows)} rows, {len(rows)} unique ids" in res.output
    assert r.invoke(cli, ["tune", *store]).exit_code == 0
    out = tmp_path / "pred.jsonl"
    res = r.invoke(cli, ["classify", "--input", str(src), "--output", str(out), *store])  # the stamped fields
    assert res.exit_code == 0, res.output
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["Ticket_ID"] for p in preds] == [f"T-{i}" for i in range(len(rows))]
    assert list(preds[0])[:5] == ["Ticket_ID", "Subject", "Body", "Queue", "product"]
    assert list(preds[0])[5] == "label" and sum(p["suggestion"] == p["Queue"] for p in preds) > 0.9 * len(preds)
    # evaluate reads the stamped composition (subject + body) too
    res = r.invoke(cli, ["evaluate", str(src), "--label-col", "queue", "--json", *store])
    assert res.exit_code == 0 and json.loads(res.stdout)["guess_accuracy"] > 0.9, res.output
