"""The serving engine: natural micro-batching of classify calls, writes on their own thread.

Classify requests that arrive while a batch is running are embedded together in the
next batch (no added wait when idle; an optional wait budget trades latency for
throughput). Every batch pins one collection version, so an answer never mixes
vectors of two encoders.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..classifier import BatchTimings, Classifier, ClassifyRequest, ClassifyResult
from ..errors import KnnclassError

__all__ = ["ClassifyJob", "Engine"]


@dataclass
class ClassifyJob:
    request: ClassifyRequest
    future: asyncio.Future[ClassifyResult]
    clf: Classifier


class Engine:
    """Runs library calls off the event loop: one thread classifies, one writes.

    Classify calls for several collections share the thread; a batch is split by collection.
    """

    def __init__(self, classifier: Classifier, max_batch: int = 64, wait_s: float = 0.0):
        self.clf = classifier
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._read = ThreadPoolExecutor(1, thread_name_prefix="knnclass-classify")
        self._write = ThreadPoolExecutor(1, thread_name_prefix="knnclass-write")
        self._queue: asyncio.Queue[ClassifyJob] | None = None
        self._task: asyncio.Task[None] | None = None
        self.observe: Any = None  # callable(encode_s, search_s, batch_texts) set by the app

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._read.shutdown(wait=True)
        self._write.shutdown(wait=True)

    # --- classify ------------------------------------------------------------------------
    async def classify(self, request: ClassifyRequest, clf: Classifier | None = None) -> ClassifyResult:
        """Classify with `clf` (default: the engine's classifier), batched with concurrent calls."""
        assert self._queue is not None, "engine not started"
        fut: asyncio.Future[ClassifyResult] = asyncio.get_running_loop().create_future()
        await self._queue.put(ClassifyJob(request, fut, clf or self.clf))
        return await fut

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            n = len(jobs[0].request.texts) or 1
            deadline = time.perf_counter() + self.wait_s
            while n < self.max_batch:
                if not self._queue.empty():
                    job = self._queue.get_nowait()
                elif self.wait_s > 0 and time.perf_counter() < deadline:
                    try:
                        job = await asyncio.wait_for(self._queue.get(), deadline - time.perf_counter())
                    except TimeoutError:
                        break
                else:
                    break
                jobs.append(job)
                n += len(job.request.texts) or 1
            try:
                results = await loop.run_in_executor(self._read, self._run_batch, jobs)
            except Exception as e:  # delivered to every waiting request
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            for j, r in zip(jobs, results, strict=True):
                if not j.future.done():
                    if isinstance(r, Exception):
                        j.future.set_exception(r)
                    else:
                        j.future.set_result(r)

    def _run_batch(self, jobs: Sequence[ClassifyJob]) -> list[ClassifyResult | KnnclassError]:
        timings = BatchTimings()
        results: list[ClassifyResult | KnnclassError | None] = [None] * len(jobs)
        groups: dict[int, list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault(id(j.clf), []).append(i)
        for idx in groups.values():
            clf, t = jobs[idx[0]].clf, BatchTimings()
            for i, r in zip(idx, clf.classify_batch([jobs[i].request for i in idx], timings=t), strict=True):
                results[i] = r
            timings.encode_s += t.encode_s
            timings.search_s += t.search_s
            timings.texts += t.texts
        if self.observe is not None:
            self.observe(timings.encode_s, timings.search_s, timings.texts)
        return [r for r in results if r is not None]

    # --- writes ----------------------------------------------------------------------------
    async def write(self, fn: Any, *args: Any) -> Any:
        """Run a write (add / relabel / delete) on the writer thread; durable when it returns."""
        return await asyncio.get_running_loop().run_in_executor(self._write, fn, *args)

    async def read(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._read, fn, *args)
