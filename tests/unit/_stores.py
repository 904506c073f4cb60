"""Every store backend for the tests that must hold on each: embedded (Qdrant Edge), server
(qdrant-client's local mode), and remote (an embedded store driven through a service's admin route)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from knnclass.store import Store
from knnclass.store.edge import EdgeStore
from knnclass.store.remote import RemoteStore, ServiceInfo
from knnclass.store.server import ServerStore

BACKENDS = ["edge", "server", "remote"]


class _ServedStore(RemoteStore):
    """A RemoteStore over an in-process service (Starlette's TestClient), closed with it."""

    def __init__(self, root: Path):
        from fastapi.testclient import TestClient

        from knnclass.classifier import Classifier
        from knnclass.encoders import FakeEncoder
        from knnclass.service import ServiceSettings, create_app

        token = "test-admin-token"
        clf = Classifier(EdgeStore(root), "tickets", encoder=FakeEncoder())
        self._client: Any = TestClient(create_app(clf, ServiceSettings(admin_token=token)))
        self._client.__enter__()
        super().__init__(root, ServiceInfo("http://testserver", token, os.getpid()), http=self._client)

    def close(self) -> None:
        self._client.__exit__(None, None, None)


def make_store(kind: str, tmp: Path) -> Store:
    """A new empty store of `kind` (see BACKENDS)."""
    if kind == "edge":
        return EdgeStore(tmp / "edge")
    if kind == "remote":
        return _ServedStore(tmp / "remote")
    from qdrant_client import QdrantClient

    return ServerStore(client=QdrantClient(location=":memory:"))
