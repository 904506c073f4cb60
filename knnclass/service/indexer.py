"""Vector-index builds for a served embedded store, in a child process, never on the serving path.

Qdrant Edge holds the GIL for the whole HNSW build, so a service that built the index itself
would stop answering for minutes. Instead: copy the shard (writes paused a moment), build the
copy's index in `python -m knnclass.store._build` (niced), replay the writes made meanwhile and
swap the copy in. `IndexBuilder.keep_up` does this by itself once enough live adds pile up.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import StoreError
from ..store import Ref, Store
from .jobs import child_setup

__all__ = ["IndexBuilder"]

log = logging.getLogger("knnclass.service")


class IndexBuilder:
    """Builds indexes of `store`'s versions out of process; `write(fn, *args)` runs fn with writes paused."""

    def __init__(
        self,
        store: Store,
        write: Callable[..., Awaitable[Any]],
        min_new_points: int = 10_000,
        min_new_share: float = 0.2,
    ):
        self.store = store
        self._write = write
        self.min_new_points = min_new_points
        self.min_new_share = min_new_share
        self._locks: dict[Ref, asyncio.Lock] = {}
        self.builds = 0

    @property
    def out_of_process(self) -> bool:
        return hasattr(self.store, "begin_index_build")

    async def build(self, ref: Ref) -> dict[str, Any]:
        """Build `ref`'s index; concurrent calls for one version run one after the other."""
        if not self.out_of_process:  # the server backend indexes by itself, on the server
            await self._write(self.store.optimize, ref)
            return {"replayed": 0, "seconds": 0.0}
        lock = self._locks.setdefault(ref, asyncio.Lock())
        async with lock:
            t0 = time.perf_counter()
            st: Any = self.store
            build = await self._write(st.begin_index_build, ref)
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "knnclass.store._build",
                    str(build),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                    preexec_fn=child_setup,
                )
                _, err = await proc.communicate()
            except BaseException:
                await self._write(st.abort_index_build, ref, build)
                raise
            if proc.returncode != 0:
                await self._write(st.abort_index_build, ref, build)
                raise StoreError(
                    f"building the index of {ref.name} {ref.version} failed: "
                    f"{err.decode(errors='replace').strip()[-500:]}; the examples are stored and searchable"
                )
            replayed = await self._write(st.finish_index_build, ref, build)
            self.builds += 1
            return {"replayed": replayed, "seconds": round(time.perf_counter() - t0, 2)}

    def due(self) -> list[Ref]:
        """Versions with enough points written since their last build to need a new one."""
        written: dict[Ref, int] = getattr(self.store, "written", {})
        out = []
        for ref, n in list(written.items()):
            if n < min(1000, self.min_new_points):
                continue
            try:
                share = n / max(1, self.store.count(ref))
            except StoreError:  # a version dropped since
                written.pop(ref, None)
                continue
            if n >= self.min_new_points or share >= self.min_new_share:
                out.append(ref)
        return out

    async def keep_up(self, every_s: float = 30.0) -> None:
        """Forever: build the index of every version that `due` names (live adds get indexed)."""
        while True:
            await asyncio.sleep(every_s)
            for ref in self.due():
                try:
                    await self.build(ref)
                except StoreError as e:
                    log.warning("%s", e)
