"""A store held by a running `knnclass serve`, driven over its local admin route.

An embedded store can be open in one process only. The service that holds it writes
ROOT/.service.json (address, pid, a random admin token; readable by the owner only), so any
other knnclass process on the machine finds it there and sends it each Store call instead of
failing on the lock. The caller does its own heavy work (embedding, tuning) in its own
process; the service only stores and searches, in bounded slices.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .. import errors
from ..data import Example
from ..errors import KnnclassError, StoreError
from ._wire import decode, encode
from .base import CollectionMeta, Hit, Ref, Store, Where

__all__ = [
    "ADMIN_HEADER",
    "SERVICE_FILE",
    "RemoteStore",
    "ServiceInfo",
    "find_service",
    "remove_service_file",
    "write_service_file",
]

SERVICE_FILE = ".service.json"
ADMIN_HEADER = "x-knnclass-admin"
STORE_ROUTE = "/v1/admin/store"


class ServiceInfo:
    """Where the service holding a store listens, and its admin token."""

    def __init__(self, url: str, token: str, pid: int):
        self.url, self.token, self.pid = url, token, pid


def write_service_file(root: Path, url: str, token: str) -> ServiceInfo:
    """Record (owner-only) that this process serves the store at `root` with admin `token`."""
    info = ServiceInfo(url, token, os.getpid())
    path = root / SERVICE_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": info.token, "pid": info.pid}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return info


def remove_service_file(root: Path, info: ServiceInfo) -> None:
    """Remove the file if it is still this service's."""
    found = _read(root)
    if found is not None and found.token == info.token:
        with contextlib.suppress(OSError):
            (root / SERVICE_FILE).unlink()


def _read(root: Path) -> ServiceInfo | None:
    try:
        d = json.loads((root / SERVICE_FILE).read_text())
        return ServiceInfo(str(d["url"]), str(d["token"]), int(d["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_service(root: Path, holder_pid: int | None) -> ServiceInfo | None:
    """The service recorded for `root`, if the process holding the store lock is that service."""
    info = _read(root)
    if info is None or (holder_pid is not None and info.pid != holder_pid):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return info


class RemoteStore(Store):
    """The Store interface over the admin route of the service holding an embedded store."""

    backend = "edge"

    def __init__(self, root: Path, service: ServiceInfo, timeout_s: float = 900.0, http: Any = None):
        """`http`: an httpx.Client to use instead of a new one (tests pass an in-process one)."""
        import httpx

        self.root = root
        self.url = service.url
        self.service_pid = service.pid
        self._http = http or httpx.Client(base_url=service.url, timeout=httpx.Timeout(timeout_s, connect=5.0))
        self._http.headers[ADMIN_HEADER] = service.token

    def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        import httpx

        body = orjson.dumps({"op": op, "args": encode(list(args)), "kwargs": encode(kwargs)})
        try:
            r = self._http.post(STORE_ROUTE, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError as e:
            raise StoreError(
                f"the service (pid {self.service_pid}, {self.url}) holding {self.root} does not answer: {e}"
            ) from None
        try:
            d = orjson.loads(r.content)
        except orjson.JSONDecodeError:
            raise StoreError(f"the service at {self.url} answered {r.status_code} without JSON") from None
        if r.status_code != 200:
            err = d.get("error", {}) if isinstance(d, dict) else {}
            cls = getattr(errors, str(err.get("type", "")), None)
            if not (isinstance(cls, type) and issubclass(cls, KnnclassError)):
                cls = StoreError
            raise cls(str(err.get("message", f"the service answered {r.status_code}")))
        return decode(d["result"])

    # --- collections and versions -------------------------------------------------
    def list_collections(self) -> list[str]:
        return list(self._call("list_collections"))

    def versions(self, name: str) -> list[str]:
        return list(self._call("versions", name))

    def current_version(self, name: str) -> str | None:
        v = self._call("current_version", name)
        return None if v is None else str(v)

    def create_version(self, name: str, meta: CollectionMeta) -> Ref:
        ref: Ref = self._call("create_version", name, meta)
        return ref

    def switch(self, name: str, version: str) -> None:
        self._call("switch", name, version)

    def drop_version(self, ref: Ref) -> None:
        self._call("drop_version", ref)

    def get_meta(self, ref: Ref) -> CollectionMeta:
        meta: CollectionMeta = self._call("get_meta", ref)
        return meta

    def set_meta(self, ref: Ref, meta: CollectionMeta) -> None:
        self._call("set_meta", ref, meta)

    # --- data ------------------------------------------------------------------------
    def upsert(self, ref: Ref, examples: Sequence[Example], vectors: np.ndarray) -> None:
        self._call("upsert", ref, list(examples), np.asarray(vectors, dtype=np.float32))

    def delete(self, ref: Ref, ids: Sequence[str]) -> None:
        self._call("delete", ref, list(ids))

    def retrieve(
        self, ref: Ref, ids: Sequence[str], with_vectors: bool = False
    ) -> list[tuple[Example, np.ndarray | None]]:
        return [(e, v) for e, v in self._call("retrieve", ref, list(ids), with_vectors)]

    def search(
        self,
        ref: Ref,
        vectors: np.ndarray,
        limit: int,
        with_text: bool = False,
        exact: bool = False,
        where: Where | None = None,
    ) -> list[list[Hit]]:
        vecs = np.asarray(vectors, dtype=np.float32)
        res: list[list[Hit]] = self._call("search", ref, vecs, limit, with_text=with_text, exact=exact, where=where)
        return res

    def scroll(
        self, ref: Ref, batch_size: int = 1024, with_vectors: bool = False, where: Where | None = None
    ) -> Iterator[tuple[list[Example], np.ndarray | None]]:
        cursor = str(self._call("scroll_open", ref, batch_size, with_vectors, where=where))
        try:
            while True:
                page = self._call("scroll_next", cursor)
                if page is None:
                    return
                examples, vecs = page
                yield list(examples), vecs
        finally:
            with contextlib.suppress(KnnclassError):
                self._call("scroll_close", cursor)

    def count(self, ref: Ref, where: Where | None = None) -> int:
        return int(self._call("count", ref, where=where))

    def optimize(self, ref: Ref) -> None:
        self._call("optimize", ref)

    def close(self) -> None:
        self._http.close()

    # --- history ---------------------------------------------------------------------
    def append_history(self, name: str, log: str, records: Sequence[dict[str, Any]]) -> None:
        self._call("append_history", name, log, list(records))

    def read_history(self, name: str, log: str) -> list[dict[str, Any]]:
        return list(self._call("read_history", name, log))

    def history_logs(self, name: str) -> list[str]:
        return list(self._call("history_logs", name))

    def drop_history(self, name: str, log: str) -> None:
        self._call("drop_history", name, log)
