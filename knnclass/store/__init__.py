"""Vector stores behind one interface: embedded Qdrant Edge and a Qdrant server."""

from __future__ import annotations

from .base import CollectionMeta, Hit, HnswSettings, Ref, Store

__all__ = ["CollectionMeta", "Hit", "HnswSettings", "Ref", "Store", "open_store"]


def open_store(
    path: str | None = None, url: str | None = None, api_key: str | None = None, create: bool = True
) -> Store:
    """The server backend when `url` is given, else the embedded store at `path`."""
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
    from .edge import EdgeStore

    return EdgeStore(path or "knnclass-data", create=create, hnsw=HnswSettings.from_env())
