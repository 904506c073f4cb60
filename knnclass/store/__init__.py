"""Vector stores behind one interface: embedded Qdrant Edge and a Qdrant server."""

from __future__ import annotations

from .base import CollectionMeta, Hit, HnswSettings, Ref, Store

__all__ = ["CollectionMeta", "Hit", "HnswSettings", "Ref", "Store", "open_store"]


def open_store(
    path: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
    create: bool = True,
    wait_s: float = 0.0,
) -> Store:
    """The server backend when `url` is given, else the embedded store at `path`.

    When a running `knnclass serve` holds the embedded store, its store is used through the
    service (knnclass.store.remote). When another process holds it, wait up to `wait_s`
    seconds for the lock, then raise StoreLockedError.
    """
    if url:
        import os

        from .server import ServerStore

        env = os.environ.get
        return ServerStore(
            url,
            api_key=api_key,
            shards=int(env("KNNCLASS_QDRANT_SHARDS", "1")),
            replication_factor=int(env("KNNCLASS_QDRANT_REPLICATION", "1")),
            write_consistency=int(env("KNNCLASS_QDRANT_WRITE_CONSISTENCY", "1")),
            hnsw=HnswSettings.from_env(),
        )
    import time
    from pathlib import Path

    from ..errors import StoreLockedError
    from .edge import EdgeStore
    from .remote import RemoteStore, find_service

    root = Path(path or "knnclass-data").expanduser().resolve()
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        try:
            return EdgeStore(root, create=create, hnsw=HnswSettings.from_env())
        except StoreLockedError as e:
            service = find_service(root, e.holder_pid)
            if service is not None:
                return RemoteStore(root, service)
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.25)
