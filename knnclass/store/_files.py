"""Small durable-file helpers: atomic JSON writes and a PID lock that names its holder."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StoreCorruptError, StoreLockedError

__all__ = ["FileCache", "ProcessLock", "atomic_write_text", "fsync_dir", "read_json"]

T = TypeVar("T")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file, fsync, rename and fsync the dir: never half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a file created, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY)
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


class FileCache:
    """Parsed small files, re-read only when the file changes (inode, size or mtime differs).

    Every write of a store file is an atomic replace (a new inode), so one stat per read tells
    whether the cached value is still the file's; the hot path (CURRENT and meta.json on every
    classify) then costs a stat instead of a read and a JSON parse. Cached values are shared:
    callers must not mutate them.
    """

    def __init__(self, size: int = 256):
        self._size = size
        self._items: dict[Path, tuple[tuple[int, int, int], Any]] = {}
        self._mu = threading.Lock()

    def get(self, path: Path, parse: Callable[[Path], T]) -> T:
        """`parse(path)`, or its cached result while the file is unchanged (FileNotFoundError passes)."""
        st = os.stat(path)
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        hit = self._items.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]  # type: ignore[no-any-return]
        value = parse(path)
        with self._mu:
            if len(self._items) >= self._size:
                self._items.clear()
            self._items[path] = (key, value)
        return value

    def forget(self, path: Path) -> None:
        with self._mu:
            self._items.pop(path, None)


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
