"""Reading labelled tickets from CSV/JSONL: column checks, clear errors, stable ids."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

__all__ = [
    "Example",
    "example_id",
    "is_blank",
    "is_utf8",
    "point_uuid",
    "read_examples",
    "read_label_map",
    "read_texts",
]

# A single CSV field may be large (long ticket bodies); the stdlib default is 128 KiB.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

_POINT_NS = uuid.UUID("8f6f3a52-2c55-4c8e-9a53-6f1d1c0b7a11")


@dataclass(frozen=True)
class Example:
    """One labelled ticket. `id` is the user's id, or a content hash of the text."""

    id: str
    text: str
    label: str


def is_blank(text: str) -> bool:
    """True when `text` has nothing to read: only white space, control or invisible format characters."""
    return all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text)


def is_utf8(text: str) -> bool:
    """False for text holding lone surrogates (JSON escapes, or argv bytes that were not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def example_id(text: str) -> str:
    """Stable id for a ticket without one: a hash of its text."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def point_uuid(ext_id: str) -> str:
    """The store's point id for an example id (stores need ints or UUIDs)."""
    return str(uuid.uuid5(_POINT_NS, ext_id))


def _rows(path: Path) -> tuple[list[str], Iterable[tuple[int, dict[str, str]]]]:
    """The header and (line number, row) pairs of a CSV or JSONL file; missing fields are ""."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a CSV or JSONL file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lineno = raw[: e.start].count(b"\n") + 1
        raise InputError(f"{path}: not valid UTF-8 (line {lineno}, byte {e.start}); re-save it as UTF-8") from None
    if "\x00" in content:
        raise InputError(f"{path}: contains NUL bytes; is it a binary file?")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        records: list[tuple[int, dict[str, str]]] = []
        keys: list[str] = []
        for n, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: invalid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{n}: each line must be a JSON object")
            for key in obj:
                if key not in keys:
                    keys.append(key)
            records.append((n, {k: "" if v is None else str(v) for k, v in obj.items()}))
        return keys, [(n, {k: r.get(k, "") for k in keys}) for n, r in records]
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: empty file") from None
    except csv.Error as e:
        raise InputError(f"{path}: malformed CSV: {e}") from None
    header = [h.strip() for h in header]

    def gen() -> Iterable[tuple[int, dict[str, str]]]:
        try:
            while True:
                n = reader.line_num + 1  # where the record starts (a quoted field may span lines)
                row = next(reader, None)
                if row is None:
                    return
                if not row:
                    continue
                if len(row) > len(header):
                    raise InputError(f"{path}:{n}: {len(row)} fields but the header has {len(header)}")
                yield n, dict(zip(header, row + [""] * (len(header) - len(row)), strict=True))
        except csv.Error as e:
            raise InputError(f"{path}: malformed CSV: {e}") from None

    return header, gen()


def _need(path: Path, header: Sequence[str], col: str, role: str) -> None:
    if col not in header:
        raise InputError(f"{path}: no {role} column {col!r} (columns: {', '.join(header) or 'none'})")


def read_label_map(path: Path) -> dict[str, str]:
    """A two-column CSV mapping one label set to another (e.g. category -> urgency)."""
    header, rows = _rows(path)
    if len(header) < 2:
        raise InputError(f"{path}: a label map needs two columns (from,to)")
    src, dst = header[0], header[1]
    mapping: dict[str, str] = {}
    for n, row in rows:
        a, b = row[src].strip(), row[dst].strip()
        if not a or not b:
            raise InputError(f"{path}:{n}: empty value in label map row")
        mapping[a] = b
    return mapping


def read_examples(
    path: Path,
    text_col: str = "text",
    label_col: str = "category",
    id_col: str | None = None,
    label_map: dict[str, str] | None = None,
) -> list[Example]:
    """Read labelled examples; every row is checked before anything is returned.

    Rows sharing an id (or, without --id-col, the same text) collapse to the last one,
    so re-reading a file is idempotent.
    """
    header, rows = _rows(path)
    _need(path, header, text_col, "text")
    _need(path, header, label_col, "label")
    if id_col is not None:
        _need(path, header, id_col, "id")
    out: dict[str, Example] = {}
    for n, row in rows:
        text = row[text_col]
        label = row[label_col].strip()
        if is_blank(text):
            raise InputError(f"{path}:{n}: empty text")
        if is_blank(label):
            raise InputError(f"{path}:{n}: empty label")
        if label_map is not None:
            if label not in label_map:
                raise InputError(f"{path}:{n}: label {label!r} is not in the label map")
            label = label_map[label]
        if id_col is not None:
            ext = row[id_col].strip()
            if not ext:
                raise InputError(f"{path}:{n}: empty id")
        else:
            ext = example_id(text)
        out[ext] = Example(ext, text, label)
    if not out:
        raise InputError(f"{path}: no rows")
    return list(out.values())


def read_texts(path: Path, text_col: str = "text") -> list[str]:
    """Read the text column of a CSV/JSONL file, in order."""
    header, rows = _rows(path)
    _need(path, header, text_col, "text")
    texts: list[str] = []
    for n, row in rows:
        text = row[text_col]
        if is_blank(text):
            raise InputError(f"{path}:{n}: empty text")
        texts.append(text)
    if not texts:
        raise InputError(f"{path}: no rows")
    return texts
