"""CLI contract: help everywhere, bad input gives one clear line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from knnclass.cli import cli
from knnclass.encoders import FakeEncoder
from knnclass.store.edge import EdgeStore


def invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_every_command_has_help() -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    for name in ("index", "tune", "evaluate", "classify", "info", "export", "embed"):
        assert name in out
        c, o, _ = invoke(name, "--help")
        assert c == 0 and "Usage:" in o


def test_module_entry_point() -> None:
    r = subprocess.run([sys.executable, "-m", "knnclass", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "index" in r.stdout


@pytest.fixture()
def tuned_store(tmp_path: Path) -> Path:
    from knnclass.classifier import Classifier
    from knnclass.data import Example

    path = tmp_path / "store"
    st = EdgeStore(path)
    c = Classifier(st, "tickets", encoder=FakeEncoder(topics=["a", "b"]))
    c.index([Example(str(i), f"{t} {i}", t) for i, t in enumerate("ab" * 5)])
    c.tune()
    st.close()
    return path


def _assert_clean_error(code: int, err: str, needle: str) -> None:
    assert code != 0
    assert needle in err, err
    assert "Traceback" not in err
    assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1


def test_missing_column(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("body,category\nhi,a\n")
    code, _, err = invoke("index", str(p), "--store", str(tmp_path / "s"))
    _assert_clean_error(code, err, "no text column 'text'")
    assert not (tmp_path / "s").exists()  # nothing created for a bad file


def test_non_utf8_and_empty_text(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_bytes(b"text,category\n\xff\xfe,a\n")
    code, _, err = invoke("index", str(p), "--store", str(tmp_path / "s"))
    _assert_clean_error(code, err, "not valid UTF-8")
    p.write_text("text,category\nok,a\n   ,b\n")
    code, _, err = invoke("index", str(p), "--store", str(tmp_path / "s"))
    _assert_clean_error(code, err, "empty text")


def test_unknown_collection_and_missing_store(tuned_store: Path, tmp_path: Path) -> None:
    code, _, err = invoke("info", "--store", str(tuned_store), "--collection", "other")
    _assert_clean_error(code, err, "no collection 'other'")
    code, _, err = invoke("info", "--store", str(tmp_path / "nothing"))
    _assert_clean_error(code, err, "no knnclass store")
    assert not (tmp_path / "nothing").exists()


def test_bad_index_file_leaves_store_untouched(tuned_store: Path, tmp_path: Path) -> None:
    before = sorted(p.relative_to(tuned_store) for p in tuned_store.rglob("*"))
    bad = tmp_path / "bad.csv"
    bad.write_text("text,category\ngood,a\nbad,\n")
    code, _, err = invoke("index", str(bad), "--store", str(tuned_store))
    _assert_clean_error(code, err, "empty label")
    after = sorted(p.relative_to(tuned_store) for p in tuned_store.rglob("*"))
    assert before == after


def test_store_held_by_another_process(tuned_store: Path) -> None:
    st = EdgeStore(tuned_store)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "knnclass", "info", "--store", str(tuned_store)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        st.close()
    assert r.returncode != 0
    assert "in use by process" in r.stderr and "Traceback" not in r.stderr


def test_classify_needs_text_or_input(tuned_store: Path) -> None:
    code, _, err = invoke("classify", "--store", str(tuned_store))
    _assert_clean_error(code, err, "give ticket texts")
    for blank in ("   ", "\u200b", "\x01"):
        code, _, err = invoke("classify", "--store", str(tuned_store), blank)
        _assert_clean_error(code, err, "empty ticket text")


def test_classify_output_never_overwrites_its_input(tuned_store: Path, tmp_path: Path) -> None:
    tickets = tmp_path / "t.csv"
    tickets.write_text("text,extra\ncard lost,keep me\n")
    code, _, err = invoke("classify", "--store", str(tuned_store), "--input", str(tickets), "--output", str(tickets))
    _assert_clean_error(code, err, "--output is the --input file")
    assert tickets.read_text() == "text,extra\ncard lost,keep me\n"


def test_classify_argument_that_is_not_utf8(tuned_store: Path) -> None:
    code, _, err = invoke("classify", "--store", str(tuned_store), "caf\udce9 card")
    _assert_clean_error(code, err, "not valid UTF-8")


def test_tune_refuses_file_options_without_validation(tuned_store: Path, data_dir: Path) -> None:
    code, _, err = invoke("tune", "--store", str(tuned_store), "--label-map", str(data_dir / "urgency.csv"))
    _assert_clean_error(code, err, "--label-map describe the --validation file")
    code, _, err = invoke("tune", "--store", str(tuned_store), "--text-col", "body")
    _assert_clean_error(code, err, "--text-col describe the --validation file")


def test_serve_refuses_read_key_without_write_key(tuned_store: Path) -> None:
    r = CliRunner().invoke(cli, ["serve", "--store", str(tuned_store)], env={"KNNCLASS_READ_KEY": "reader"})
    assert r.exit_code != 0 and "set KNNCLASS_API_KEY too" in r.stderr and "Traceback" not in r.stderr


def test_tune_unknown_label_without_validation(tuned_store: Path) -> None:
    code, _, err = invoke("tune", "--store", str(tuned_store), "--unknown-label", "oos")
    _assert_clean_error(code, err, "--unknown-label needs --validation")


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = invoke("index", str(tmp_path / "nope.csv"), "--store", str(tmp_path / "s"))
    assert code == 2 and "does not exist" in err and "Traceback" not in err


def test_collections_lists_every_collection(tuned_store: Path) -> None:
    import json

    code, out, err = invoke("collections", "--store", str(tuned_store), "--json")
    assert code == 0, err
    (d,) = json.loads(out)
    assert (d["collection"], d["version"], d["count"], d["labels"]) == ("tickets", "v1", 10, 2)
    assert d["label_counts"] == {"a": 5, "b": 5} and d["rule"].startswith("majority")
    code, out, _ = invoke("collections", "--store", str(tuned_store))
    assert code == 0 and out.startswith("tickets") and "count 10" in out
