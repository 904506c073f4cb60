"""Metadata filters (Where): typed payload, payload indexes, the same neighbours on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.errors import InputError
from knnclass.store import CollectionMeta
from knnclass.store.base import Where, infer_kind, to_payload_value

from ._stores import make_store

TOPICS = ["card", "transfer", "pin", "refund"]
ENC = FakeEncoder(topics=TOPICS)
SCHEMA = {"product": "keyword", "created_at": "datetime", "amount": "number"}


def _examples() -> list[Example]:
    out = []
    for t in TOPICS:
        for i in range(20):
            meta = {
                "product": ["cards", "loans"][i % 2],
                "created_at": f"2026-0{1 + i % 4}-1{i % 10}T08:00:00Z",
                "amount": float(i * 10),
            }
            if i == 7:
                del meta["amount"]  # a row without the column: no range matches it
            out.append(Example(f"{t}-{i}", f"{t} ticket {i} {i * 3 % 7}", t, {"priority": "p" + str(i % 3)}, meta))
    return out


FILTERS = [
    ["product=cards"],
    ["created_at>=2026-03-01"],
    ["created_at<2026-02-01", "product=loans"],
    ["amount>50", "amount<=150"],
    ["amount=40"],
    ["product=cards", "product=loans"],  # contradictory: nothing
]


def _run(kind: str, tmp: Path) -> list[list[list[str]]]:
    st = make_store(kind, tmp)
    ref = st.create("t", CollectionMeta(ENC.identity, "fake", ENC.dim, payload_schema=SCHEMA))
    ex = _examples()
    st.upsert(ref, ex, ENC.embed([e.text for e in ex]))
    st.optimize(ref)
    queries = ENC.embed(["my card", "a transfer", "pin code", "refund it"])
    out = []
    for f in FILTERS:
        where = Where.parse(f).resolve(SCHEMA)
        hits = st.search(ref, queries, 12, where=where)
        matching = {e.id for e in ex if where.matches(e.meta)}
        assert all(h.id in matching for row in hits for h in row), f
        assert st.count(ref, where) == len(matching)
        assert sorted(e.id for b, _ in st.scroll(ref, 7, where=where) for e in b) == sorted(matching)
        out.append([[h.id for h in row] for row in hits])
    # an unresolved filter is typed by the store from the collection's schema
    raw = Where.parse(["created_at>=2026-03-01"])
    assert [[h.id for h in r] for r in st.search(ref, queries, 12, where=raw)] == out[1]
    got = st.retrieve(ref, ["card-3"])[0][0]
    assert got == ex[3] and got.labels == {"priority": "p0"} and got.meta["amount"] == 30.0
    assert st.search(ref, queries[:1], 1)[0][0].labels.get("priority", "").startswith("p")
    st.close()
    return out


def test_filters_identical_on_both_backends(tmp_path: Path) -> None:
    edge, server = _run("edge", tmp_path), _run("server", tmp_path)
    assert edge == server
    assert edge[-1] == [[], [], [], []] and all(len(r) == 12 for r in edge[0])


@pytest.mark.parametrize("kind", ["edge", "server"])  # looks inside the backend (remote = edge)
def test_payload_indexes_created(kind: str, tmp_path: Path) -> None:
    st = make_store(kind, tmp_path)
    made: list[tuple[str, str]] = []
    if kind == "server":  # local mode keeps no payload indexes: record what the backend asks for
        create = st.client.create_payload_index  # type: ignore[attr-defined]

        def spy(name: str, key: str, schema: object, **kw: object) -> object:
            made.append((key, str(schema)))
            return create(name, key, schema, **kw)

        st.client.create_payload_index = spy  # type: ignore[attr-defined]
    ref = st.create("t", CollectionMeta(ENC.identity, "fake", ENC.dim, payload_schema={"product": "keyword"}))
    st.set_meta(ref, st.get_meta(ref).with_(payload_schema={"product": "keyword", "n": "number", "d": "datetime"}))
    if kind == "edge":
        info = st._shard(ref).info().payload_schema  # type: ignore[attr-defined]
        have = {k: str(v.data_type).lower() for k, v in info.items()}
    else:
        have = {k: s.lower() for k, s in made}
    assert {"meta.product", "meta.n", "meta.d"} <= set(have)
    assert "keyword" in have["meta.product"] and "float" in have["meta.n"] and "datetime" in have["meta.d"]
    st.close()


def test_where_parse_resolve_and_errors() -> None:
    w = Where.parse(["product=cards", "created_at >= 2026-03-01", "amount<3"])
    r = w.resolve(SCHEMA)
    assert [c.value for c in r.conds] == ["cards", "2026-03-01T00:00:00Z", 3.0]
    assert Where.from_dict(r.to_dict()) == r
    assert Where.from_filter(w.to_filter()) == w
    assert Where.from_filter({"product": "cards", "created_at": {"gte": "2026-03-01"}}).resolve(SCHEMA) == Where(
        r.conds[:2]
    )
    with pytest.raises(InputError, match=r"unknown metadata column 'prodcut'.*product, created_at, amount"):
        Where.parse(["prodcut=cards"]).resolve(SCHEMA)
    with pytest.raises(InputError, match="'amount' holds numbers; 'lots' is not one"):
        Where.parse(["amount>lots"]).resolve(SCHEMA)
    with pytest.raises(InputError, match="dates/times; 'March'"):
        Where.parse(["created_at>=March"]).resolve(SCHEMA)
    with pytest.raises(InputError, match="keyword column takes only '='"):
        Where.parse(["product>cards"]).resolve(SCHEMA)
    with pytest.raises(InputError, match="COLUMN=VALUE"):
        Where.parse(["product"])
    with pytest.raises(InputError, match="unknown operator"):
        Where.from_filter({"amount": {"between": 3}})


def test_kinds_inferred_and_normalised() -> None:
    assert infer_kind(["1", "2.5", ""]) == "number"
    assert infer_kind(["2026-03-01", "2026-03-02T10:00:00+02:00"]) == "datetime"
    assert infer_kind(["cards", "3"]) == "keyword" and infer_kind([]) == "keyword"
    assert to_payload_value("t", "datetime", "2026-03-02T10:00:00+02:00") == "2026-03-02T08:00:00Z"
    assert to_payload_value("n", "number", "7") == 7.0
