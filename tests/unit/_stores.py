"""Both store backends for the tests that must hold on each: embedded (Qdrant Edge) and server (local mode)."""

from __future__ import annotations

from pathlib import Path

from knnclass.store import Store
from knnclass.store.edge import EdgeStore
from knnclass.store.server import ServerStore

BACKENDS = ["edge", "server"]


def make_store(kind: str, tmp: Path) -> Store:
    """A new empty store of `kind`: an embedded one under `tmp`, or qdrant-client's in-memory local mode."""
    if kind == "edge":
        return EdgeStore(tmp / "edge")
    from qdrant_client import QdrantClient

    return ServerStore(client=QdrantClient(location=":memory:"))
