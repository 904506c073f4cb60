"""An app factory for multi-worker serving: each worker builds its app from KNNCLASS_* env."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from ..cli._common import open_classifier
from .app import ServiceSettings, create_app

__all__ = ["app_from_env"]


def app_from_env() -> FastAPI:
    """The service configured from the environment (set by `knnclass serve --workers N`)."""
    env = os.environ.get
    encoder = env("KNNCLASS_ENCODER")
    clf = open_classifier(
        store=env("KNNCLASS_STORE", "./knnclass-data"),  # type: ignore[arg-type]
        collection=env("KNNCLASS_COLLECTION", "tickets"),
        qdrant_url=env("KNNCLASS_QDRANT_URL"),
        qdrant_api_key=env("KNNCLASS_QDRANT_API_KEY"),
        encoder_dir=encoder,  # type: ignore[arg-type]
    )
    in_flight = env("KNNCLASS_MAX_IN_FLIGHT")
    limits: dict[str, Any] = {"max_in_flight": int(in_flight)} if in_flight else {}
    settings = ServiceSettings(
        api_key=env("KNNCLASS_API_KEY") or None,
        read_key=env("KNNCLASS_READ_KEY") or None,
        **limits,
        batch_wait_ms=float(env("KNNCLASS_BATCH_WAIT_MS", "0")),
        snapshot_dir=env("KNNCLASS_SNAPSHOT_DIR") or None,
    )
    return create_app(clf, settings)
