"""Shared fixtures: offline hub, a session-wide real encoder, fake encoders, temp stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "banking77"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def encoder_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """KNNCLASS_CACHE for the session: the caller's if set (reuses its export), else a temp dir."""
    cache = os.environ.get("KNNCLASS_CACHE")
    path = Path(cache) if cache else tmp_path_factory.mktemp("kc-cache")
    os.environ["KNNCLASS_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def real_encoder(encoder_cache: Path):  # type: ignore[no-untyped-def]
    """The default encoder (all-MiniLM-L6-v2, int8 ONNX), exported once per session."""
    from knnclass.encoders import load_encoder

    return load_encoder(None)


@pytest.fixture()
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture()
def edge_store(store_path: Path) -> Iterator[object]:
    from knnclass.store.edge import EdgeStore

    st = EdgeStore(store_path)
    yield st
    st.close()
