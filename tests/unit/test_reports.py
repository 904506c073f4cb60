"""Label-quality tools and reports with the fake encoder on a real Edge store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from knnclass.classifier import Classifier
from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.errors import ExampleNotFoundError, InputError
from knnclass.reports import REPORT_FILES, apply_relabels, drift, find_duplicates, find_suspects, write_report
from knnclass.store.edge import EdgeStore

TOPICS = ["card", "transfer", "pin", "refund"]


@pytest.fixture()
def clf(tmp_path: Path) -> Classifier:
    c = Classifier(EdgeStore(tmp_path / "s"), "tickets", encoder=FakeEncoder(topics=TOPICS))
    ex = [Example(f"{t}-{i}", f"{t} issue {i}", t) for t in TOPICS for i in range(12)]
    ex[3] = Example("card-3", "card issue 3", "pin")  # a flipped label
    ex[20] = Example("transfer-8", "transfer issue 8", "refund")  # another
    ex.append(Example("dup-a", "pin issue 5", "card"))  # exact duplicate text of pin-5 with a conflicting label
    c.index(ex)
    c.tune()
    return c


def test_suspects_find_the_flipped_labels(clf: Classifier) -> None:
    found = find_suspects(clf, k=10)
    top = {s.id for s in found[:4]}
    assert {"card-3", "transfer-8"} <= top
    s = next(s for s in found if s.id == "card-3")
    assert (s.label, s.suggested_label) == ("pin", "card") and 0 < s.margin <= 1 and len(s.neighbours) == 10
    assert [x.margin for x in found] == sorted((x.margin for x in found), reverse=True)


def test_apply_relabels_checks_every_id_first(clf: Classifier, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\ncard-3,card\nnope,x\n")
    with pytest.raises(ExampleNotFoundError, match="nothing changed"):
        apply_relabels(clf, bad)
    assert clf.get("card-3").label == "pin"
    twice = tmp_path / "twice.csv"
    twice.write_text("id,label\ncard-3,card\ncard-3,transfer\n")
    with pytest.raises(InputError, match="listed more than once; nothing changed"):
        apply_relabels(clf, twice)
    assert clf.get("card-3").label == "pin"
    good = tmp_path / "good.csv"
    good.write_text("id,label\ncard-3,card\ntransfer-8,transfer\n")
    assert apply_relabels(clf, good) == 2
    assert clf.get("card-3").label == "card" and clf.get("transfer-8").label == "transfer"
    assert "card-3" not in {s.id for s in find_suspects(clf, k=10)}
    with pytest.raises(InputError):
        (tmp_path / "cols.csv").write_text("x,y\n1,2\n")
        apply_relabels(clf, tmp_path / "cols.csv")


def test_duplicates_conflicts_first(clf: Classifier) -> None:
    d = find_duplicates(clf, threshold=0.999)
    assert d and d[0]["conflict"] and {d[0]["a"], d[0]["b"]} == {"dup-a", "pin-5"}
    with pytest.raises(InputError):
        find_duplicates(clf, threshold=0)


def test_drift_flags_new_topics(clf: Classifier) -> None:
    d = drift(clf, ["card issue again", "completely new subject about weather", "another unrelated thing here"])
    assert d["n_new"] == 3 and d["n_history"] == 49
    flagged = {f["text"] for f in d["flagged"]}
    assert "completely new subject about weather" in flagged and "card issue again" not in flagged


def test_report_files(clf: Classifier, tmp_path: Path) -> None:
    test = [Example(f"t{i}", f"{t} question {i}", t) for i, t in enumerate(TOPICS * 5)]
    r = write_report(clf, test, tmp_path / "rep")
    for name in REPORT_FILES:
        p = tmp_path / "rep" / name
        assert p.exists() and p.stat().st_size > (300 if name.endswith(".md") else 5000), name
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "![confusions](confusions.png)" in text and "| label | precision |" in text
    assert 0 <= r["accuracy"] <= 1


def test_binary_report_has_tradeoff(tmp_path: Path) -> None:
    c = Classifier(EdgeStore(tmp_path / "b"), "u", encoder=FakeEncoder(topics=["stolen", "question"]))
    c.index(
        [Example(f"s{i}", f"stolen card {i}", "urgent") for i in range(10)]
        + [Example(f"q{i}", f"question {i}", "not_urgent") for i in range(20)]
    )
    c.tune()
    test = [Example("a", "stolen again", "urgent"), Example("b", "a question", "not_urgent")]
    r = write_report(c, test, tmp_path / "rep")
    assert (tmp_path / "rep" / "positive_tradeoff.png").stat().st_size > 1000 and r["binary"][
        "positive_label"
    ] == "urgent"


def test_cli_suspects_json_and_errors(clf: Classifier, tmp_path: Path) -> None:
    from knnclass.cli import cli

    store = clf.store
    path = store.root  # type: ignore[attr-defined]
    store.close()
    r = CliRunner().invoke(cli, ["suspects", "--store", str(path), "--json", "--limit", "3"])
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 3 and {"id", "label", "suggested_label", "margin"} <= set(rows[0])
    r = CliRunner().invoke(cli, ["duplicates", "--store", str(path), "--threshold", "1.5"])
    assert r.exit_code != 0 and "Traceback" not in r.stderr
