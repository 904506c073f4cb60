"""One settings object: KNNCLASS_* read once, flags over it, passed on to worker processes."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from knnclass.errors import InputError
from knnclass.settings import ENV, Settings, env
from knnclass.store import HnswSettings

PKG = Path(__file__).resolve().parents[2] / "knnclass"


def test_defaults_env_and_overrides() -> None:
    assert Settings.from_env({}) == Settings()
    s = Settings.from_env(
        {"KNNCLASS_STORE": "/data/s", "KNNCLASS_HNSW_EF": "64", "KNNCLASS_WAIT": "2.5", "KNNCLASS_API_KEY": ""},
        collection="routing",
        qdrant_url=None,  # an unset flag changes nothing
    )
    assert (s.store, s.collection, s.hnsw, s.wait_s, s.api_key) == (
        "/data/s",
        "routing",
        HnswSettings(ef=64),
        2.5,
        None,
    )
    assert s.with_(store=None, collection="x").store == "/data/s"
    with pytest.raises(InputError, match="KNNCLASS_QDRANT_SHARDS='two'"):
        Settings.from_env({"KNNCLASS_QDRANT_SHARDS": "two"})


def test_to_env_round_trips() -> None:
    s = Settings(store="/s", collection="c", qdrant_url="http://q:6333", max_in_flight=9, hnsw=HnswSettings(m=16))
    assert Settings.from_env(s.to_env()) == s
    assert set(s.to_env()) <= {f"KNNCLASS_{n}" for n in ENV}
    every = Settings(
        **{f.name: f"v-{f.name}" for f in fields(Settings) if f.type in ("str", "str | None")},
        qdrant_shards=3,
        qdrant_replication=2,
        qdrant_write_consistency=2,
        wait_s=1.5,
        max_in_flight=7,
        batch_wait_ms=2.0,
        hnsw=HnswSettings(m=8, ef_construct=64, ef=40),
    )
    assert Settings.from_env(every.to_env()) == every  # every field travels, none is left out


def test_every_knnclass_variable_in_the_code_is_registered() -> None:
    """One place: no module reads a KNNCLASS_* name that ENV does not list."""
    used = set()
    for path in PKG.rglob("*.py"):
        used |= set(re.findall(r"KNNCLASS_([A-Z][A-Z0-9_]*[A-Z0-9])", path.read_text()))
    unknown = {u for u in used if u not in ENV and not any(u.startswith(n) for n in ENV)} - {"HNSW"}
    assert not unknown, f"not in knnclass.settings.ENV: {sorted(unknown)}"
    with pytest.raises(KeyError):
        env("NOT_A_SETTING")
