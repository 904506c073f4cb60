"""The local admin route through which other knnclass processes use the store this service holds.

Qdrant Edge holds the GIL while it upserts or searches, so every call is cut into bounded
slices, and a slice starts only once no serving request is in progress (`pause`, the service's
`Foreground.wait`): requests go first, a bulk index or a re-tune fills the gaps.
Writes run on the engine's writer thread (in order with live edits); reads on their own thread.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson

from ..errors import InputError
from ..store import Store
from ..store._wire import decode, encode, encode_hits
from ..store.base import Hit
from .indexer import IndexBuilder

__all__ = ["StoreRoute"]

UPSERT_SLICE = 64  # points per Edge upsert call: a few ms of GIL at most
SEARCH_SLICE_HITS = 256  # hits per Edge search call and its encoding (a few ms of GIL), at least one query
SCROLL_PAGE = 256  # points per scroll page: one Edge read, encoded in one go
CURSOR_TTL_S = 600.0

_READS = {
    "list_collections", "versions", "current_version", "get_meta", "retrieve", "search", "count",
    "read_history", "history_logs", "scroll_open", "scroll_next", "scroll_close",
}  # fmt: skip
_WRITES = {
    "create_version", "switch", "drop_version", "set_meta", "upsert", "delete", "optimize",
    "append_history", "drop_history",
}  # fmt: skip


class _Encoded(bytes):
    """A result already in its JSON wire form (encoded slice by slice, with pauses between)."""


def _answer(result: Any) -> bytes:
    if isinstance(result, _Encoded):
        return b'{"result":' + result + b"}"
    return orjson.dumps({"result": encode(result)})


class StoreRoute:
    """Executes wire-encoded Store calls against `store`; `token` authorises them."""

    def __init__(
        self,
        store: Store,
        token: str,
        write: Callable[..., Any],
        indexer: IndexBuilder,
        pause: Callable[[], None] = lambda: time.sleep(0),
    ):
        """`pause`: called between slices; blocks while serving traffic should go first."""
        self.store = store
        self.pause = pause
        self.token = token
        self.indexer = indexer
        self._write = write  # the engine's writer: `await write(fn, *args)`
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="knnclass-admin-read")
        self._cursors: dict[str, tuple[Iterator[Any], float]] = {}
        self._mu = threading.Lock()

    def allowed(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    async def call(self, body: dict[str, Any]) -> bytes:
        """Run one wire-encoded call; the JSON answer `{"result": ...}` as bytes.

        Decoding the arguments and encoding the answer (a tune's searches return hundreds of
        thousands of hits) happen on the thread that runs the call, never on the event loop,
        where they stalled every classify request for up to seconds."""
        op = str(body.get("op", ""))
        if op == "optimize":  # out of process: the build must not hold this process's GIL
            await self.indexer.build(self._decoded(body)[0][0])
            return _answer(None)
        if op in _WRITES:
            out: bytes = await self._write(self._run_wire, op, body)
            return out
        if op in _READS:
            return await asyncio.get_running_loop().run_in_executor(self._reads, self._run_wire, op, body)
        raise InputError(f"unknown store operation {op!r}")

    @staticmethod
    def _decoded(body: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        args = decode(body.get("args", []))
        kwargs = decode(body.get("kwargs", {}))
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise InputError("malformed store call")
        return args, kwargs

    def _run_wire(self, op: str, body: dict[str, Any]) -> bytes:
        args, kwargs = self._decoded(body)
        return _answer(self._run(op, args, kwargs))

    def shutdown(self) -> None:
        self._reads.shutdown(wait=True)

    # --- operations --------------------------------------------------------------------
    def _run(self, op: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        special = getattr(self, f"_op_{op}", None)
        if special is not None:
            return special(*args, **kwargs)
        return getattr(self.store, op)(*args, **kwargs)

    def _op_upsert(self, ref: Any, examples: list[Any], vectors: np.ndarray) -> None:
        for i in range(0, len(examples), UPSERT_SLICE):
            self.store.upsert(ref, examples[i : i + UPSERT_SLICE], vectors[i : i + UPSERT_SLICE])
            self.pause()

    def _op_delete(self, ref: Any, ids: list[str]) -> None:
        for i in range(0, len(ids), UPSERT_SLICE):
            self.store.delete(ref, ids[i : i + UPSERT_SLICE])
            self.pause()

    def _op_search(self, ref: Any, vectors: np.ndarray, limit: int, **kw: Any) -> _Encoded:
        """The hits, searched and encoded a slice of queries at a time: a tune asks for hundreds of
        hits per query, and encoding them in one go held the GIL for seconds."""
        parts: list[bytes] = []
        step = max(1, SEARCH_SLICE_HITS // max(1, int(limit)))
        for i in range(0, len(vectors), step):
            hits: list[list[Hit]] = self.store.search(ref, vectors[i : i + step], limit, **kw)
            parts.append(orjson.dumps(encode_hits(hits))[1:-1])  # the rows, without the list's brackets
            self.pause()
        return _Encoded(b"[" + b",".join(p for p in parts if p) + b"]")

    def _op_retrieve(self, ref: Any, ids: list[str], with_vectors: bool = False) -> list[Any]:
        return [[e, v] for e, v in self.store.retrieve(ref, ids, with_vectors)]

    def _op_scroll_open(self, ref: Any, batch_size: int = 1024, with_vectors: bool = False, where: Any = None) -> str:
        self._expire()
        cursor = secrets.token_hex(8)
        it = self.store.scroll(ref, min(int(batch_size), SCROLL_PAGE), with_vectors, where=where)
        with self._mu:
            self._cursors[cursor] = (it, time.monotonic())
        return cursor

    def _op_scroll_next(self, cursor: str) -> list[Any] | None:
        with self._mu:
            found = self._cursors.get(cursor)
        if found is None:
            raise InputError("unknown or expired scroll cursor; start the scroll again")
        it = found[0]
        self.pause()  # a page is one Edge read of up to SCROLL_PAGE points
        page = next(it, None)
        with self._mu:
            if page is None:
                self._cursors.pop(cursor, None)
            else:
                self._cursors[cursor] = (it, time.monotonic())
        return None if page is None else [page[0], page[1]]

    def _op_scroll_close(self, cursor: str) -> None:
        with self._mu:
            self._cursors.pop(cursor, None)

    def _expire(self) -> None:
        now = time.monotonic()
        with self._mu:
            for c, (_, t) in list(itertools.islice(self._cursors.items(), 1000)):
                if now - t > CURSOR_TTL_S:
                    del self._cursors[c]
