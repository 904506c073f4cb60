"""Vector stores behind one interface: embedded Qdrant Edge and a Qdrant server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import CollectionMeta, Hit, HnswSettings, Ref, Store

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["CollectionMeta", "Hit", "HnswSettings", "Ref", "Store", "open_store"]


def open_store(
    path: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
    create: bool = True,
    wait_s: float | None = None,
    settings: Settings | None = None,
) -> Store:
    """The server backend when a Qdrant URL is set, else the embedded store at the path.

    `settings` (default: read from the environment now) say where and how; the other arguments
    override it. When a running `knnclass serve` holds the embedded store, its store is used
    through the service (knnclass.store.remote). When another process holds it, wait up to
    `wait_s` seconds for the lock, then raise StoreLockedError.
    """
    from ..settings import Settings

    s = (settings or Settings.from_env()).with_(store=path, qdrant_url=url, qdrant_api_key=api_key, wait_s=wait_s)
    if s.qdrant_url:
        from .server import ServerStore

        return ServerStore(
            s.qdrant_url,
            api_key=s.qdrant_api_key,
            shards=s.qdrant_shards,
            replication_factor=s.qdrant_replication,
            write_consistency=s.qdrant_write_consistency,
            hnsw=s.hnsw,
        )
    import time
    from pathlib import Path

    from ..errors import StoreLockedError
    from .edge import EdgeStore
    from .remote import RemoteStore, find_service

    root = Path(s.store).expanduser().resolve()
    deadline = time.monotonic() + max(0.0, s.wait_s)
    while True:
        try:
            return EdgeStore(root, create=create, hnsw=s.hnsw)
        except StoreLockedError as e:
            service = find_service(root, e.holder_pid)
            if service is not None:
                return RemoteStore(root, service)
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.25)
