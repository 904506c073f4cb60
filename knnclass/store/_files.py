"""Small durable-file helpers: atomic JSON writes and a PID lock that names its holder."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import StoreCorruptError, StoreLockedError

__all__ = ["ProcessLock", "atomic_write_text", "read_json"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file, fsync, rename and fsync the dir: never half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise StoreCorruptError(f"{path}: unreadable ({e}); the store is damaged — restore it from a backup") from None


class ProcessLock:
    """An exclusive, non-blocking flock on `path`, recording who holds it."""

    def __init__(self, path: Path, what: str):
        self._path = path
        self._fd: int | None = None
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder, pid = "another process", None
            with contextlib.suppress(OSError):
                info = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                if info:
                    holder = f"process {info}"
                    with contextlib.suppress(ValueError):
                        pid = int(info.split()[0])
            os.close(fd)
            err = StoreLockedError(
                f"{what} is in use by {holder}; only one process may open an embedded store at a time — "
                "wait for it to finish, or serve the store (`knnclass serve`): other commands then work through it"
            )
            err.holder_pid = pid
            raise err from None
        os.ftruncate(fd, 0)
        cmd = " ".join(os.path.basename(a) for a in sys.argv[:2]) or "python"
        os.pwrite(fd, f"{os.getpid()} ({cmd})".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
