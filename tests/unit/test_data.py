"""Reading tickets: columns, encodings, ids, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from knnclass.data import example_id, point_uuid, read_examples, read_label_map, read_texts
from knnclass.errors import InputError


def write(tmp_path: Path, content: str | bytes, name: str = "t.csv") -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


def test_reads_csv_with_quoted_newlines_and_bom(tmp_path: Path) -> None:
    p = write(tmp_path, '\ufefftext,category\n"line one\nline two",a\nplain,b\n'.encode())
    ex = read_examples(p)
    assert [e.label for e in ex] == ["a", "b"]
    assert ex[0].text == "line one\nline two"
    assert ex[0].id == example_id("line one\nline two")


def test_content_hash_ids_are_stable_and_dedupe(tmp_path: Path) -> None:
    p = write(tmp_path, "text,category\nhello,a\nhello,b\nworld,a\n")
    ex = read_examples(p)
    assert len(ex) == 2  # same text collapses to the last row
    assert {e.text: e.label for e in ex} == {"hello": "b", "world": "a"}
    assert read_examples(p) == ex


def test_id_column(tmp_path: Path) -> None:
    p = write(tmp_path, "id,text,category\n7,hello,a\n8,hello,b\n")
    ex = read_examples(p, id_col="id")
    assert [(e.id, e.label) for e in ex] == [("7", "a"), ("8", "b")]
    assert point_uuid("7") != point_uuid("8")
    assert point_uuid("7") == point_uuid("7")


def test_jsonl(tmp_path: Path) -> None:
    p = write(tmp_path, '{"text": "a b", "category": "x"}\n\n{"text": "c", "category": "y"}\n', "t.jsonl")
    assert [e.label for e in read_examples(p)] == ["x", "y"]


def test_label_map(tmp_path: Path, data_dir: Path) -> None:
    mapping = read_label_map(data_dir / "urgency.csv")
    assert set(mapping.values()) == {"urgent", "not_urgent"}
    p = write(tmp_path, "text,category\nstolen!,lost_or_stolen_card\n")
    assert read_examples(p, label_map=mapping)[0].label == mapping["lost_or_stolen_card"]
    bad = write(tmp_path, "text,category\nx,not_a_category\n", "bad.csv")
    with pytest.raises(InputError, match="not in the label map"):
        read_examples(bad, label_map=mapping)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,label\nhi,a\n", "no label column 'category'"),
        ("body,category\nhi,a\n", "no text column 'text'"),
        ("text,category\n  ,a\n", "empty text"),
        ("text,category\n\u200b\u200b\t,a\n", "empty text"),
        ("text,category\nhi,\u200b\n", "empty label"),
        ("text,category\nhi,\n", "empty label"),
        ("", "empty file"),
        ("text,category\n", "no rows"),
        ("text,category\nhi,a,extra\n", "fields but the header has"),
        (b"text,category\ncaf\xe9,a\n", "not valid UTF-8"),
        (b"text,category\n\x00\x01,a\n", "NUL bytes"),
    ],
)
def test_bad_files_are_clear_input_errors(tmp_path: Path, content: str | bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_examples(write(tmp_path, content))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_examples(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a directory"):
        read_texts(tmp_path)


def test_large_field_is_read(tmp_path: Path) -> None:
    big = "x" * 300_000
    assert read_texts(write(tmp_path, f"text\n{big}\n")) == [big]


def test_invalid_jsonl(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="invalid JSON"):
        read_examples(write(tmp_path, '{"text": \n', "t.jsonl"))
    with pytest.raises(InputError, match="JSON object"):
        read_examples(write(tmp_path, "[1, 2]\n", "u.jsonl"))


def test_line_numbers_and_missing_jsonl_keys(tmp_path: Path) -> None:
    jl = tmp_path / "t.jsonl"
    jl.write_text('{"text": "a b", "category": "x"}\n\n{"text": "c d"}\n')
    with pytest.raises(InputError, match=r"t\.jsonl:3: empty label"):  # a missing key is an empty field
        read_examples(jl)
    csv_path = tmp_path / "t.csv"
    csv_path.write_text('text,category\n"two\nlines",x\n,y\n')
    with pytest.raises(InputError, match=r"t\.csv:4: empty text"):  # counted from where the record starts
        read_examples(csv_path)


def test_tsv_semicolons_json_arrays_and_case_insensitive_headers(tmp_path: Path) -> None:
    from knnclass.data import read_table

    tsv = write(tmp_path, "Text\tCategory\nmy card, broken\ta\n", "t.tsv")
    assert [(e.text, e.label) for e in read_examples(tsv)] == [("my card, broken", "a")]
    semi = write(tmp_path, "text;category\nhello, there;b\n", "s.csv")  # sniffed from the header
    assert read_examples(semi)[0].text == "hello, there"
    arr = write(tmp_path, '[{"text": "x", "category": "c", "n": 3}, {"text": "y", "category": "d"}]', "a.json")
    header, rows, texts = read_table(arr)
    assert header == ["text", "category", "n"] and rows[0]["n"] == "3" and rows[1]["n"] == "" and texts == ["x", "y"]
    with pytest.raises(InputError, match="array of objects"):
        read_examples(write(tmp_path, '{"text": "x"}', "o.json"))
    with pytest.raises(InputError, match=r"no text column 'body' \(columns: Text, Category\)"):
        read_examples(tsv, "body")


def test_text_from_several_fields_or_a_template(tmp_path: Path) -> None:
    from knnclass.data import TextSource

    p = write(tmp_path, "id,subject,body,category\n1,Card lost,I lost it yesterday,a\n2,,only a body,b\n")
    ex = read_examples(p, TextSource(("subject", "body")), id_col="id")
    assert [e.text for e in ex] == ["Card lost\n\nI lost it yesterday", "only a body"]
    ex = read_examples(p, TextSource((), "Subject: {subject}\n{body}"), id_col="ID")
    assert ex[0].text == "Subject: Card lost\nI lost it yesterday" and ex[0].id == "1"
    with pytest.raises(InputError, match="no text column 'title'"):
        read_examples(p, TextSource(("subject", "title")))
    with pytest.raises(InputError, match="names no"):
        TextSource((), "no fields here")


def test_reading_reports_duplicates_and_conflicting_labels(tmp_path: Path) -> None:
    from knnclass.data import ReadStats

    p = write(tmp_path, "id,text,category\n1,a,x\n2,b,y\n1,a,z\n3,c,y\n3,c,y\n")
    stats = ReadStats()
    ex = read_examples(p, id_col="id", stats=stats)
    assert [(e.id, e.label) for e in ex] == [("1", "z"), ("2", "y"), ("3", "y")]
    assert (stats.rows, stats.unique, stats.duplicates) == (5, 3, 2)
    assert stats.conflicts == [{"id": "1", "labels": "x/z", "kept": "z"}]
    assert "1 with conflicting labels" in stats.describe()


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json"])
def test_write_table_round_trips_by_extension(tmp_path: Path, suffix: str) -> None:
    from knnclass.data import read_table, write_table

    out = tmp_path / f"o{suffix}"
    write_table(out, ["id", "text", "label"], [["7", "hello, world", "a"], ["8", "line\ttab", None]])
    header, rows, texts = read_table(out)
    assert header == ["id", "text", "label"] and texts == ["hello, world", "line\ttab"]
    assert [r["id"] for r in rows] == ["7", "8"] and rows[1]["label"] == ""
    with pytest.raises(InputError, match="unknown output format"):
        write_table(tmp_path / "o.xlsx", ["a"], [["1"]])


def test_one_text_column_is_read_as_is_so_ids_stay_stable(tmp_path: Path) -> None:
    p = write(tmp_path, 'text,category\n"card ",a\ncard,a\n')
    ex = read_examples(p)
    assert [e.text for e in ex] == ["card ", "card"] and ex[0].id == example_id("card ")
