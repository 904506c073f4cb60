"""Every KNNCLASS_* setting in one place: read once (flags over environment), then passed in.

`Settings.from_env()` reads the environment once; the CLI overrides fields with its flags
(`settings.with_(...)`) and hands the object to the library and the service. A service with
several worker processes passes its settings on with `to_env()`. Process-wide knobs that
are read where they act (cache dir, device, threads, fused ops, free-space floor) are listed
in ENV too, and read through `env()`, so every name lives here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import InputError
from .store.base import HnswSettings

__all__ = ["ENV", "Settings", "env"]

ENV: dict[str, str] = {
    # per command / service (fields of Settings)
    "STORE": "embedded store directory",
    "COLLECTION": "collection name",
    "QDRANT_URL": "Qdrant server/cluster URL (instead of the embedded store)",
    "QDRANT_API_KEY": "API key for QDRANT_URL",
    "QDRANT_SHARDS": "shards of new server collections",
    "QDRANT_REPLICATION": "replication factor of new server collections",
    "QDRANT_WRITE_CONSISTENCY": "write consistency factor of new server collections",
    "ENCODER": "encoder dir (default: the collection's)",
    "WAIT": "seconds to wait for an embedded store another command holds",
    "HNSW_M": "HNSW m of new collection versions",
    "HNSW_EF_CONSTRUCT": "HNSW ef_construct of new collection versions",
    "HNSW_EF": "HNSW ef at query time",
    "API_KEY": "the service's write key (also reads)",
    "READ_KEY": "the service's read-only key",
    "MAX_IN_FLIGHT": "requests in progress beyond which the service answers 429",
    "BATCH_WAIT_MS": "extra wait to gather concurrent classify calls into one batch",
    "SNAPSHOT_DIR": "where POST /v1/admin/snapshot may write",
    "IMPORT_DIR": "server-side directory admin index jobs may read files from",
    "TO_QDRANT_API_KEY": "API key of the target Qdrant of `knnclass copy`",
    # process-wide knobs, read where they act
    "PROGRESS_FILE": "where a command writes its progress as JSON (set by the service's admin jobs)",
    "CACHE": "where exported encoders are cached (default ~/.cache/knnclass)",
    "DEVICE": "encoder device: cpu, cuda or auto",
    "THREADS": "encoder threads (default: every usable CPU)",
    "FUSED_OPS": "0 turns knnclass's compiled onnxruntime ops off",
    "MIN_FREE_MB": "free disk below which the embedded store refuses writes",
}


def env(name: str, default: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of KNNCLASS_`name` (a name listed in ENV), or `default` when unset or empty."""
    if name not in ENV:
        raise KeyError(f"KNNCLASS_{name} is not a knnclass setting")
    value = (os.environ if environ is None else environ).get(f"KNNCLASS_{name}")
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    """Where the data lives, how it is searched, and how the service guards itself."""

    store: str = "./knnclass-data"
    collection: str = "tickets"
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_shards: int = 1
    qdrant_replication: int = 1
    qdrant_write_consistency: int = 1
    encoder: str | None = None
    wait_s: float = 0.0
    hnsw: HnswSettings = field(default_factory=HnswSettings)
    api_key: str | None = None
    read_key: str | None = None
    max_in_flight: int | None = None
    batch_wait_ms: float = 0.0
    snapshot_dir: str | None = None
    import_dir: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then KNNCLASS_* from `environ` (default os.environ), then `overrides` (not None)."""
        d = cls()

        def get(name: str) -> str | None:
            return env(name, None, environ)

        def num(name: str, default: Any, kind: type) -> Any:
            raw = get(name)
            if raw is None:
                return default
            try:
                return kind(raw)
            except ValueError:
                raise InputError(f"KNNCLASS_{name}={raw!r}: not a {kind.__name__}") from None

        values: dict[str, Any] = {
            "store": get("STORE") or d.store,
            "collection": get("COLLECTION") or d.collection,
            "qdrant_url": get("QDRANT_URL"),
            "qdrant_api_key": get("QDRANT_API_KEY"),
            "qdrant_shards": num("QDRANT_SHARDS", 1, int),
            "qdrant_replication": num("QDRANT_REPLICATION", 1, int),
            "qdrant_write_consistency": num("QDRANT_WRITE_CONSISTENCY", 1, int),
            "encoder": get("ENCODER"),
            "wait_s": num("WAIT", 0.0, float),
            "hnsw": HnswSettings(
                m=num("HNSW_M", d.hnsw.m, int),
                ef_construct=num("HNSW_EF_CONSTRUCT", d.hnsw.ef_construct, int),
                ef=num("HNSW_EF", d.hnsw.ef, int),
            ),
            "api_key": get("API_KEY"),
            "read_key": get("READ_KEY"),
            "max_in_flight": num("MAX_IN_FLIGHT", None, int),
            "batch_wait_ms": num("BATCH_WAIT_MS", 0.0, float),
            "snapshot_dir": get("SNAPSHOT_DIR"),
            "import_dir": get("IMPORT_DIR"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with the `changes` that are not None (CLI flags left unset change nothing)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_env(self) -> dict[str, str]:
        """These settings as KNNCLASS_* variables (for worker processes that read them once)."""
        names = {
            "store": "STORE", "collection": "COLLECTION", "qdrant_url": "QDRANT_URL",
            "qdrant_api_key": "QDRANT_API_KEY", "qdrant_shards": "QDRANT_SHARDS",
            "qdrant_replication": "QDRANT_REPLICATION", "qdrant_write_consistency": "QDRANT_WRITE_CONSISTENCY",
            "encoder": "ENCODER", "wait_s": "WAIT", "api_key": "API_KEY", "read_key": "READ_KEY",
            "max_in_flight": "MAX_IN_FLIGHT", "batch_wait_ms": "BATCH_WAIT_MS", "snapshot_dir": "SNAPSHOT_DIR",
            "import_dir": "IMPORT_DIR",
        }  # fmt: skip
        out = {f"KNNCLASS_{names[f.name]}": str(getattr(self, f.name)) for f in fields(self) if f.name in names}
        out = {k: ("" if v == "None" else v) for k, v in out.items()}
        out.update(
            KNNCLASS_HNSW_M=str(self.hnsw.m),
            KNNCLASS_HNSW_EF_CONSTRUCT=str(self.hnsw.ef_construct),
            KNNCLASS_HNSW_EF=str(self.hnsw.ef),
        )
        return out
