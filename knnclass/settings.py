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
from dataclasses import dataclass, field, replace
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
    "HNSW_EF": "HNSW ef at query time (default: scaled to the collection size)",
    "API_KEY": "the service's write key (also reads)",
    "READ_KEY": "the service's read-only key",
    "MAX_IN_FLIGHT": "requests in progress beyond which the service answers 429",
    "BATCH_WAIT_MS": "extra wait to gather concurrent classify calls into one batch",
    "SNAPSHOT_DIR": "where POST /v1/admin/snapshot may write",
    "IMPORT_DIR": "server-side directory admin index jobs may read files from",
    "GIL_SWITCH_MS": "longest GIL hold while another thread of the service waits (default 0.5)",
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
    gil_switch_ms: float = 0.5

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then KNNCLASS_* from `environ` (default os.environ), then `overrides` (not None)."""
        d = cls()

        def read(name: str, default: Any, kind: type) -> Any:
            raw = env(name, None, environ)
            if raw is None:
                return default
            try:
                return kind(raw)
            except ValueError:
                raise InputError(f"KNNCLASS_{name}={raw!r}: not a {kind.__name__}") from None

        values = {f: read(name, getattr(d, f), kind) for f, (name, kind) in _FIELDS.items()}
        values["hnsw"] = HnswSettings(**{f: read(name, getattr(d.hnsw, f), int) for f, name in _HNSW_FIELDS.items()})
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with the `changes` that are not None (CLI flags left unset change nothing)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_env(self) -> dict[str, str]:
        """These settings as KNNCLASS_* variables (for worker processes that read them once); None is ""."""

        def text(v: Any) -> str:
            return "" if v is None else str(v)

        out = {f"KNNCLASS_{name}": text(getattr(self, f)) for f, (name, _) in _FIELDS.items()}
        out.update({f"KNNCLASS_{name}": text(getattr(self.hnsw, f)) for f, name in _HNSW_FIELDS.items()})
        return out


# Settings field -> (its ENV name, its type), and HnswSettings field -> ENV name: the one mapping
# from_env and to_env both read.
_FIELDS: dict[str, tuple[str, type]] = {
    "store": ("STORE", str),
    "collection": ("COLLECTION", str),
    "qdrant_url": ("QDRANT_URL", str),
    "qdrant_api_key": ("QDRANT_API_KEY", str),
    "qdrant_shards": ("QDRANT_SHARDS", int),
    "qdrant_replication": ("QDRANT_REPLICATION", int),
    "qdrant_write_consistency": ("QDRANT_WRITE_CONSISTENCY", int),
    "encoder": ("ENCODER", str),
    "wait_s": ("WAIT", float),
    "api_key": ("API_KEY", str),
    "read_key": ("READ_KEY", str),
    "max_in_flight": ("MAX_IN_FLIGHT", int),
    "batch_wait_ms": ("BATCH_WAIT_MS", float),
    "snapshot_dir": ("SNAPSHOT_DIR", str),
    "import_dir": ("IMPORT_DIR", str),
    "gil_switch_ms": ("GIL_SWITCH_MS", float),
}
_HNSW_FIELDS = {"m": "HNSW_M", "ef_construct": "HNSW_EF_CONSTRUCT", "ef": "HNSW_EF"}
