"""Qdrant server / cluster backend through qdrant-client.

A collection NAME has physical collections NAME__v1, NAME__v2, ... and a Qdrant alias
NAME pointing at the current one; `switch` re-points the alias in one atomic call.
Per-version metadata (encoder stamp, tuned rule) lives in the `knnclass_meta`
collection, so every process and replica sees the same stamp; the label history in
`knnclass_history` (one point per change set, or per 512 KiB part of a large one).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..data import Example, point_uuid
from ..errors import CollectionNotFoundError, InputError, StoreError
from .base import CollectionMeta, Hit, HnswSettings, Ref, Store, Where, in_order, validate_history_log, validate_name

__all__ = ["ServerStore"]

META = "knnclass_meta"
HISTORY = "knnclass_history"
_PART = 512 * 1024  # characters of a change set's JSON per history point
_PAYLOAD = ["label", "ext_id", "labels"]
_NS = uuid.UUID("2b0f7f7e-8a47-4d0f-9a1c-5b8d9a0e3c21")


def _physical(ref: Ref) -> str:
    return f"{ref.name}__{ref.version}"


class ServerStore(Store):
    """Collections on a Qdrant server or cluster. `client` may be any ready QdrantClient."""

    backend = "server"

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        client: Any = None,
        shards: int = 1,
        replication_factor: int = 1,
        write_consistency: int = 1,
        hnsw: HnswSettings | None = None,
        timeout: int = 60,
    ):
        from qdrant_client import QdrantClient, models

        self._m = models
        if client is None:
            if not url:
                raise InputError("the server backend needs --qdrant-url")
            client = QdrantClient(url=url, api_key=api_key, timeout=timeout)
        self.client = client
        self.url = url
        self._history_ready = False
        self._seq = 0
        self.shards, self.replication, self.consistency = shards, replication_factor, write_consistency
        self.hnsw = hnsw or HnswSettings()
        self._sizes: dict[Ref, tuple[float, int]] = {}  # ref -> (when read, approximate count)
        try:
            if not self.client.collection_exists(META):
                self.client.create_collection(
                    META,
                    vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT),
                    replication_factor=replication_factor,
                    write_consistency_factor=write_consistency,
                )
        except Exception as e:
            raise StoreError(f"cannot reach Qdrant at {url or 'the given client'}: {e}") from None

    # --- collections and versions -------------------------------------------------------
    def _aliases(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}

    def list_collections(self) -> list[str]:
        return sorted(a for a, c in self._aliases().items() if re.fullmatch(re.escape(a) + r"__v\d+", c))

    def versions(self, name: str) -> list[str]:
        validate_name(name)
        prefix = f"{name}__v"
        found = [
            c.name[len(name) + 2 :] for c in self.client.get_collections().collections if c.name.startswith(prefix)
        ]
        found = [v for v in found if v[1:].isdigit() and self._meta_point(Ref(name, v)) is not None]
        return sorted(found, key=lambda v: int(v[1:]))

    def current_version(self, name: str) -> str | None:
        target = self._aliases().get(validate_name(name))
        if target is None or not target.startswith(f"{name}__v"):
            return None
        return target[len(name) + 2 :]

    def create_version(self, name: str, meta: CollectionMeta) -> Ref:
        m = self._m
        validate_name(name)
        existing = [
            int(c.name[len(name) + 3 :])
            for c in self.client.get_collections().collections
            if c.name.startswith(f"{name}__v") and c.name[len(name) + 3 :].isdigit()
        ]
        ref = Ref(name, f"v{max(existing, default=0) + 1}")
        try:
            self.client.create_collection(
                _physical(ref),
                vectors_config=m.VectorParams(size=meta.dim, distance=m.Distance.COSINE),
                shard_number=self.shards,
                replication_factor=self.replication,
                write_consistency_factor=self.consistency,
                hnsw_config=m.HnswConfigDiff(m=self.hnsw.m, ef_construct=self.hnsw.ef_construct),
            )
            self.client.create_payload_index(_physical(ref), "label", m.PayloadSchemaType.KEYWORD)
        except Exception as e:
            raise StoreError(f"cannot create {_physical(ref)}: {e}") from None
        self.set_meta(ref, meta)
        return ref

    def _filter(self, ref: Ref, where: Where | None) -> Any:
        """`where` as a qdrant-client Filter (typed by `ref`'s schema when it is not yet); None for none."""
        where = self.resolve_where(ref, where)
        if not where:
            return None
        m = self._m
        must: list[Any] = []
        for key, (kind, b) in where.bounds().items():
            path = f"meta.{key}"
            if b.get("never"):
                must += [
                    m.FieldCondition(key=path, match=m.MatchValue(value=b["match"])),
                    m.IsNullCondition(is_null=m.PayloadField(key=path)),
                ]
            elif "match" in b:
                must.append(m.FieldCondition(key=path, match=m.MatchValue(value=b["match"])))
            elif kind == "number":
                must.append(m.FieldCondition(key=path, range=m.Range(**b)))
            else:
                must.append(m.FieldCondition(key=path, range=m.DatetimeRange(**b)))
        return m.Filter(must=must)

    def _ensure_indexes(self, ref: Ref, meta: CollectionMeta) -> None:
        """A payload index for every metadata column of `meta` the collection has none for."""
        if not meta.payload_schema:
            return
        m = self._m
        kinds = {"keyword": m.PayloadSchemaType.KEYWORD, "number": m.PayloadSchemaType.FLOAT}
        try:
            have = set(self.client.get_collection(_physical(ref)).payload_schema or {})
            for col, kind in meta.payload_schema.items():
                if f"meta.{col}" not in have:
                    schema = kinds.get(kind, m.PayloadSchemaType.DATETIME)
                    self.client.create_payload_index(_physical(ref), f"meta.{col}", schema, wait=True)
        except Exception as e:
            raise StoreError(f"cannot index the metadata of {_physical(ref)}: {e}") from None

    def switch(self, name: str, version: str) -> None:
        m = self._m
        if version not in self.versions(name):
            raise CollectionNotFoundError(f"collection {name!r} has no version {version!r}")
        ops: list[Any] = []
        if name in self._aliases():
            ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=name)))
        ops.append(
            m.CreateAliasOperation(
                create_alias=m.CreateAlias(collection_name=_physical(Ref(name, version)), alias_name=name)
            )
        )
        self.client.update_collection_aliases(change_aliases_operations=ops)

    def drop_version(self, ref: Ref) -> None:
        if self.current_version(ref.name) == ref.version:
            raise InputError(f"{ref.name} {ref.version} is the current version; switch away first")
        self.client.delete_collection(_physical(ref))
        self.client.delete(META, points_selector=self._m.PointIdsList(points=[self._meta_id(ref)]), wait=True)

    def _meta_id(self, ref: Ref) -> str:
        return str(uuid.uuid5(_NS, _physical(ref)))

    def _meta_point(self, ref: Ref) -> Any:
        got = self.client.retrieve(META, [self._meta_id(ref)], with_payload=True)
        return got[0] if got else None

    def get_meta(self, ref: Ref) -> CollectionMeta:
        p = self._meta_point(ref)
        if p is None:
            raise CollectionNotFoundError(f"collection {ref.name!r} has no version {ref.version!r}")
        return CollectionMeta.from_dict(json.loads(p.payload["meta"]))

    def set_meta(self, ref: Ref, meta: CollectionMeta) -> None:
        self._ensure_indexes(ref, meta)
        point = self._m.PointStruct(
            id=self._meta_id(ref),
            vector=[1.0],
            payload={"collection": ref.name, "version": ref.version, "meta": json.dumps(meta.to_dict())},
        )
        self.client.upsert(META, points=[point], wait=True)

    # --- data -------------------------------------------------------------------------------
    def upsert(self, ref: Ref, examples: Sequence[Example], vectors: np.ndarray) -> None:
        if len(examples) != len(vectors):
            raise InputError("examples and vectors differ in length")
        if not examples:
            return
        points = [
            self._m.PointStruct(id=point_uuid(e.id), vector=v.tolist(), payload=e.payload())
            for e, v in zip(examples, vectors, strict=True)
        ]
        try:
            self.client.upsert(_physical(ref), points=points, wait=True, ordering=self._m.WriteOrdering.STRONG)
        except Exception as e:
            raise StoreError(f"upsert into {ref.name} {ref.version} failed: {e}") from None

    def delete(self, ref: Ref, ids: Sequence[str]) -> None:
        if ids:
            self.client.delete(
                _physical(ref), points_selector=self._m.PointIdsList(points=[point_uuid(i) for i in ids]), wait=True
            )

    def retrieve(
        self, ref: Ref, ids: Sequence[str], with_vectors: bool = False
    ) -> list[tuple[Example, np.ndarray | None]]:
        if not ids:
            return []
        recs = self.client.retrieve(
            _physical(ref), [point_uuid(i) for i in ids], with_payload=True, with_vectors=with_vectors
        )
        return in_order(ids, recs, (lambda r: r.vector) if with_vectors else None)

    def search(
        self,
        ref: Ref,
        vectors: np.ndarray,
        limit: int,
        with_text: bool = False,
        exact: bool = False,
        where: Where | None = None,
    ) -> list[list[Hit]]:
        m = self._m
        if len(vectors) == 0:
            return []
        payload = [*_PAYLOAD, "text"] if with_text else _PAYLOAD
        flt = self._filter(ref, where)
        n = 0 if self.hnsw.ef is not None else self._size(ref)
        params = m.SearchParams(hnsw_ef=self.hnsw.search_ef(n, limit, flt is not None), exact=exact)
        reqs = [
            m.QueryRequest(query=v.tolist(), limit=limit, with_payload=payload, params=params, filter=flt)
            for v in vectors
        ]
        res = self.client.query_batch_points(_physical(ref), requests=reqs)
        return [
            [
                Hit(
                    p.payload["ext_id"],
                    p.payload["label"],
                    float(p.score),
                    p.payload.get("text"),
                    p.payload.get("labels") or {},
                )
                for p in r.points
            ]
            for r in res
        ]

    def scroll(
        self, ref: Ref, batch_size: int = 1024, with_vectors: bool = False, where: Where | None = None
    ) -> Iterator[tuple[list[Example], np.ndarray | None]]:
        flt = self._filter(ref, where)
        offset = None
        while True:
            recs, offset = self.client.scroll(
                _physical(ref),
                scroll_filter=flt,
                limit=batch_size,
                offset=offset,
                with_payload=True,
                with_vectors=with_vectors,
            )
            if recs:
                examples = [Example.from_payload(r.payload) for r in recs]
                vecs = np.asarray([r.vector for r in recs], dtype=np.float32) if with_vectors else None
                yield examples, vecs
            if offset is None:
                return

    def _size(self, ref: Ref) -> int:
        """The collection's approximate point count, re-read at most once a minute (it picks the search ef)."""
        import time

        now = time.monotonic()
        hit = self._sizes.get(ref)
        if hit is None or now - hit[0] > 60:
            hit = (now, int(self.client.count(_physical(ref), exact=False).count))
            self._sizes[ref] = hit
        return hit[1]

    def count(self, ref: Ref, where: Where | None = None) -> int:
        return int(self.client.count(_physical(ref), count_filter=self._filter(ref, where), exact=True).count)

    def optimize(self, ref: Ref) -> None:
        """The server builds its index in the background; nothing to do."""

    # --- history ---------------------------------------------------------------------------------
    def _history_filter(self, name: str, log: str | None = None) -> Any:
        m = self._m
        must = [m.FieldCondition(key="collection", match=m.MatchValue(value=validate_name(name)))]
        if log is not None:
            must.append(m.FieldCondition(key="log", match=m.MatchValue(value=validate_history_log(log))))
        return m.Filter(must=must)

    def _history_points(self, name: str, log: str | None, fields: list[str]) -> Iterator[Any]:
        if not self.client.collection_exists(HISTORY):
            return
        offset = None
        while True:
            recs, offset = self.client.scroll(
                HISTORY, scroll_filter=self._history_filter(name, log), limit=256, offset=offset, with_payload=fields
            )
            yield from recs
            if offset is None:
                return

    def append_history(self, name: str, log: str, records: Sequence[dict[str, Any]]) -> None:
        """Each record as one point (or several parts), ordered by a nanosecond sequence number."""
        m = self._m
        validate_history_log(log)
        if not records:
            return
        if not self._history_ready:
            if not self.client.collection_exists(HISTORY):
                self.client.create_collection(
                    HISTORY,
                    vectors_config=m.VectorParams(size=1, distance=m.Distance.DOT),
                    replication_factor=self.replication,
                    write_consistency_factor=self.consistency,
                )
                for key in ("collection", "log"):
                    self.client.create_payload_index(HISTORY, key, m.PayloadSchemaType.KEYWORD)
            self._history_ready = True
        points = []
        for rec in records:
            self._seq = max(self._seq + 1, time.time_ns())
            data = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
            parts = [data[i : i + _PART] for i in range(0, len(data), _PART)] or [""]
            key = str(rec.get("id") or self._seq)
            for i, part in enumerate(parts):
                payload = {"collection": name, "log": log, "seq": self._seq, "record": key, "part": i}
                points.append(
                    m.PointStruct(
                        id=str(uuid.uuid5(_NS, f"{name}\n{log}\n{key}\n{self._seq}\n{i}")),
                        vector=[1.0],
                        payload={**payload, "parts": len(parts), "data": part},
                    )
                )
        try:
            for i in range(0, len(points), 64):
                self.client.upsert(HISTORY, points=points[i : i + 64], wait=True, ordering=m.WriteOrdering.STRONG)
        except Exception as e:
            raise StoreError(f"appending to the history of {name} failed: {e}") from None

    def read_history(self, name: str, log: str) -> list[dict[str, Any]]:
        groups: dict[tuple[int, str], dict[int, str]] = {}
        parts: dict[tuple[int, str], int] = {}
        for p in self._history_points(name, log, ["seq", "record", "part", "parts", "data"]):
            key = (int(p.payload["seq"]), str(p.payload["record"]))
            groups.setdefault(key, {})[int(p.payload["part"])] = p.payload["data"]
            parts[key] = int(p.payload["parts"])
        out = []
        for key in sorted(groups):
            got = groups[key]
            if len(got) != parts[key]:
                continue  # a record whose parts were not all written (a crash mid-append)
            try:
                rec = json.loads("".join(got[i] for i in range(parts[key])))
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def history_logs(self, name: str) -> list[str]:
        return sorted({str(p.payload["log"]) for p in self._history_points(name, None, ["log"])})

    def drop_history(self, name: str, log: str) -> None:
        if self.client.collection_exists(HISTORY):
            selector = self._m.FilterSelector(filter=self._history_filter(name, log))
            self.client.delete(HISTORY, points_selector=selector, wait=True)

    def close(self) -> None:
        self.client.close()
