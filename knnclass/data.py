"""Reading tickets from CSV/TSV, JSONL, JSON arrays and Parquet: column checks, clear errors, stable ids."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DependencyError, InputError

__all__ = [
    "Example",
    "ReadStats",
    "TextSource",
    "example_id",
    "is_blank",
    "is_utf8",
    "point_uuid",
    "read_examples",
    "read_label_map",
    "read_table",
    "read_texts",
    "write_table",
]

# A single CSV field may be large (long ticket bodies); the stdlib default is 128 KiB.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

_POINT_NS = uuid.UUID("8f6f3a52-2c55-4c8e-9a53-6f1d1c0b7a11")


@dataclass(frozen=True)
class Example:
    """One labelled ticket. `id` is the user's id, or a content hash of the text.

    `label` is its label of the collection's primary label set; `labels` those of the extra
    sets it has (a set may be missing); `meta` its metadata (payload kinds: str, float, or a
    UTC RFC 3339 string for date/times).
    """

    id: str
    text: str
    label: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    def payload(self) -> dict[str, Any]:
        """What the stores keep of it besides the vector."""
        return {"label": self.label, "text": self.text, "ext_id": self.id, **self._extras()}

    def to_dict(self) -> dict[str, Any]:
        """As the API and snapshots show it: id, text, label; extra label sets and metadata only where it has them."""
        return {"id": self.id, "text": self.text, "label": self.label, **self._extras()}

    def _extras(self) -> dict[str, Any]:
        """Its extra label sets and metadata (copies), only those it has."""
        d: dict[str, Any] = {}
        if self.labels:
            d["labels"] = dict(self.labels)
        if self.meta:
            d["meta"] = dict(self.meta)
        return d

    @classmethod
    def from_payload(cls, payload: dict[str, Any], ext_id: str | None = None) -> Example:
        return cls(
            ext_id if ext_id is not None else payload["ext_id"],
            payload["text"],
            payload["label"],
            dict(payload.get("labels") or {}),
            dict(payload.get("meta") or {}),
        )


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


def _cell(v: object) -> str:
    return "" if v is None else v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def _records(
    path: Path, records: list[tuple[int, dict[str, object]]]
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    keys: list[str] = []
    for _, obj in records:
        for key in obj:
            if key not in keys:
                keys.append(key)
    return keys, [(n, {k: _cell(r.get(k)) for k in keys}) for n, r in records]


def _parquet(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DependencyError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises its own exception types
        raise InputError(f"{path}: not a readable Parquet file: {e}") from None
    return _records(path, [(i + 2, row) for i, row in enumerate(table.to_pylist())])


def _delimiter(path: Path, first_line: str, delimiter: str | None) -> str:
    """The field separator: given, by extension (.tsv), or sniffed from the header line."""
    if delimiter is not None:
        if len(delimiter) != 1:
            raise InputError(f"--delimiter must be one character, not {delimiter!r}")
        return delimiter
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    counts = {d: first_line.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _rows(path: Path, delimiter: str | None = None) -> tuple[list[str], Iterable[tuple[int, dict[str, str]]]]:
    """The header and (line number, row) pairs of a CSV/TSV, JSONL, JSON-array or Parquet file.

    Missing fields are ""; non-text JSON values are written as JSON.
    """
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a CSV, TSV, JSONL, JSON or Parquet file")
    if path.suffix.lower() == ".parquet":
        return _parquet(path)
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
    if path.suffix.lower() == ".json":
        try:
            arr = json.loads(content)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
        if not isinstance(arr, list) or not all(isinstance(o, dict) for o in arr):
            raise InputError(f"{path}: a .json file must hold an array of objects (use .jsonl for one per line)")
        return _records(path, [(i + 1, o) for i, o in enumerate(arr)])
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        records: list[tuple[int, dict[str, object]]] = []
        for n, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: invalid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{n}: each line must be a JSON object")
            records.append((n, obj))
        return _records(path, records)
    sep = _delimiter(path, content.split("\n", 1)[0], delimiter)
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=sep)
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


def _need(path: Path, header: Sequence[str], col: str, role: str) -> str:
    """The header's name for column `col`, matched exactly or else ignoring case."""
    if col in header:
        return col
    folded = [h for h in header if h.casefold() == col.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise InputError(f"{path}: no {role} column {col!r} (columns: {', '.join(header) or 'none'})")


@dataclass(frozen=True)
class TextSource:
    """Which fields make a ticket's text: `fields` joined by a blank line, or `template`
    (str.format over the row, e.g. "{subject}\\n\\n{body}")."""

    fields: tuple[str, ...] = ("text",)
    template: str | None = None

    def __post_init__(self) -> None:
        if not self.fields and self.template is None:
            raise InputError("name at least one text column")
        if self.template is not None:
            names = self.template_fields()
            if not names:
                raise InputError(f"--text-template {self.template!r} names no {{field}}")

    def template_fields(self) -> list[str]:
        import string

        if self.template is None:
            return list(self.fields)
        try:
            return [f for _, f, _, _ in string.Formatter().parse(self.template) if f]
        except ValueError as e:
            raise InputError(f"--text-template {self.template!r}: {e}") from None

    def columns(self, path: Path, header: Sequence[str]) -> dict[str, str]:
        """Each field's column name in `header` (case-insensitive); an error lists the columns found."""
        return {f: _need(path, header, f, "text") for f in self.template_fields()}

    def compose(self, values: dict[str, str]) -> str:
        """The ticket text from field values (missing fields are empty)."""
        if self.template is not None:
            return self.template.format_map({f: values.get(f, "") for f in self.template_fields()})
        if len(self.fields) == 1:  # the text as it is: its hash is the id, as before composition existed
            return values.get(self.fields[0], "")
        return "\n\n".join(v for v in (values.get(f, "").strip() for f in self.fields) if v)

    def to_dict(self) -> dict[str, object]:
        return {"fields": list(self.fields), "template": self.template}

    @classmethod
    def from_dict(cls, d: dict[str, object] | None) -> TextSource:
        if not d:
            return cls()
        fields = d.get("fields") or ["text"]
        template = d.get("template")
        return cls(
            tuple(str(f) for f in fields) if isinstance(fields, list) else ("text",),
            template if isinstance(template, str) else None,
        )


def _source(text_col: str | Sequence[str] | TextSource) -> TextSource:
    if isinstance(text_col, TextSource):
        return text_col
    return TextSource((text_col,) if isinstance(text_col, str) else tuple(text_col))


@dataclass
class ReadStats:
    """What reading a labelled file found: rows, unique ids, repeated ids and label conflicts."""

    rows: int = 0
    unique: int = 0
    duplicates: int = 0
    conflicts: list[dict[str, str]] = field(default_factory=list)  # id, labels seen, the label kept

    def describe(self) -> str:
        out = f"{self.rows} rows, {self.unique} unique ids"
        if self.duplicates:
            out += f", {self.duplicates} repeated (the last row of each id wins)"
        if self.conflicts:
            c = self.conflicts[0]
            out += (
                f", {len(self.conflicts)} with conflicting labels (e.g. {c['id']}: {c['labels']} -> kept {c['kept']})"
            )
        return out


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
    text_col: str | Sequence[str] | TextSource = "text",
    label_col: str | Sequence[str] = "category",
    id_col: str | None = None,
    label_map: dict[str, str] | None = None,
    stats: ReadStats | None = None,
    delimiter: str | None = None,
    meta_cols: Sequence[str] = (),
    label_maps: dict[str, dict[str, str]] | None = None,
) -> list[Example]:
    """Read labelled examples; every row is checked before anything is returned.

    Rows sharing an id (or, without `id_col`, the same text) collapse to the last one, so
    re-reading a file is idempotent; `stats` (when given) records how many did and which
    of them disagreed on the label.

    Several `label_col`s make several label sets: the first is the primary one (`label`, must
    not be empty), the others go to `Example.labels` under their column name as given (an
    empty cell: that set has no label for the row). `label_map` maps the primary set,
    `label_maps` any set by name. `meta_cols` are kept as text in `Example.meta` (empty cells
    left out; the classifier types them when indexing).
    """
    source = _source(text_col)
    header, rows = _rows(path, delimiter)
    cols = source.columns(path, header)
    names = [label_col] if isinstance(label_col, str) else list(label_col)
    if not names:
        raise InputError("name at least one label column")
    if len(set(names)) != len(names):
        raise InputError(f"label columns repeat: {', '.join(names)}")
    maps = dict(label_maps or {})
    unknown = sorted(set(maps) - set(names))
    if unknown:
        raise InputError(
            f"--label-map {unknown[0]}=...: no label column {unknown[0]!r} (label columns: {', '.join(names)})"
        )
    if label_map is not None:
        maps.setdefault(names[0], label_map)
    label_cols = {n: _need(path, header, n, "label") for n in names}
    label_col = label_cols[names[0]]
    extra = names[1:]
    meta = {m: _need(path, header, m, "metadata") for m in meta_cols}
    if id_col is not None:
        id_col = _need(path, header, id_col, "id")
    out: dict[str, Example] = {}
    seen: dict[str, list[str]] = {}
    n_rows = 0
    for n, row in rows:
        n_rows += 1
        text = source.compose({f: row[c] for f, c in cols.items()})
        label = row[label_col].strip()
        if is_blank(text):
            raise InputError(f"{path}:{n}: empty text")
        if is_blank(label):
            raise InputError(f"{path}:{n}: empty label in column {label_col!r}")
        primary_map = maps.get(names[0])
        if primary_map is not None:
            if label not in primary_map:
                raise InputError(f"{path}:{n}: label {label!r} is not in the label map")
            label = primary_map[label]
        others: dict[str, str] = {}
        for name in extra:
            value = row[label_cols[name]].strip()
            if is_blank(value):
                continue
            if name in maps:
                if value not in maps[name]:
                    raise InputError(f"{path}:{n}: {name} label {value!r} is not in its label map")
                value = maps[name][value]
            others[name] = value
        values = {m: row[c].strip() for m, c in meta.items() if row[c].strip()}
        if id_col is not None:
            ext = row[id_col].strip()
            if not ext:
                raise InputError(f"{path}:{n}: empty id")
        else:
            ext = example_id(text)
        out[ext] = Example(ext, text, label, others, values)
        seen.setdefault(ext, []).append(label)
    if not out:
        raise InputError(f"{path}: no rows")
    if stats is not None:
        stats.rows, stats.unique, stats.duplicates = n_rows, len(out), n_rows - len(out)
        stats.conflicts = [
            {"id": k, "labels": "/".join(sorted(set(v))), "kept": v[-1]} for k, v in seen.items() if len(set(v)) > 1
        ]
    return list(out.values())


def read_table(
    path: Path, text_col: str | Sequence[str] | TextSource = "text", delimiter: str | None = None
) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """Every column of a file of tickets: (header, rows in order, each row's composed text)."""
    source = _source(text_col)
    header, rows = _rows(path, delimiter)
    cols = source.columns(path, header)
    out_rows: list[dict[str, str]] = []
    texts: list[str] = []
    for n, row in rows:
        text = source.compose({f: row[c] for f, c in cols.items()})
        if is_blank(text):
            raise InputError(f"{path}:{n}: empty text")
        out_rows.append(row)
        texts.append(text)
    if not texts:
        raise InputError(f"{path}: no rows")
    return header, out_rows, texts


def read_texts(
    path: Path, text_col: str | Sequence[str] | TextSource = "text", delimiter: str | None = None
) -> list[str]:
    """The (composed) ticket texts of a file, in order."""
    return read_table(path, text_col, delimiter)[2]


def write_table(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write rows as the extension says: .csv, .tsv, .jsonl, .json or .parquet (needs pyarrow)."""
    suffix = path.suffix.lower()
    rows = [list(r) for r in rows]
    if suffix in (".jsonl", ".ndjson", ".json"):
        records = [dict(zip(header, r, strict=True)) for r in rows]
        with path.open("w", encoding="utf-8") as f:
            if suffix == ".json":
                json.dump(records, f, ensure_ascii=False, indent=1)
            else:
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return
    if suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise DependencyError(f"{path}: writing Parquet needs pyarrow (pip install pyarrow)") from None
        cols = {h: [r[i] for r in rows] for i, h in enumerate(header)}
        pq.write_table(pa.table(cols), path)
        return
    if suffix not in (".csv", ".tsv", ".txt", ""):
        raise InputError(f"{path}: unknown output format {suffix!r} (use .csv, .tsv, .jsonl, .json or .parquet)")
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t" if suffix == ".tsv" else ",")
        w.writerow(header)
        w.writerows(["" if v is None else v for v in r] for r in rows)
