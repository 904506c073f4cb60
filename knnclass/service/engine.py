"""The serving engine: natural micro-batching of classify calls, writes on their own thread.

Classify requests that arrive while a batch is running are embedded together in the
next batch (no added wait when idle; an optional wait budget trades latency for
throughput). Every batch pins one collection version, so an answer never mixes
vectors of two encoders.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..classifier import BatchTimings, Classifier, ClassifyRequest, ClassifyResult
from ..errors import KnnclassError, OverloadedError
from .foreground import Foreground

__all__ = ["ClassifyJob", "Engine"]


@dataclass
class ClassifyJob:
    request: ClassifyRequest
    future: asyncio.Future[ClassifyResult]
    clf: Classifier


class Engine:
    """Runs library calls off the event loop: one thread classifies, one writes.

    A classify call that finds the classify thread idle starts its batch at once, straight
    from the request (no queue task in between: that hop cost 0.3-0.5 ms a request); calls
    that arrive while a batch runs wait in `_pending` and go together in the next batch, which
    the finished batch's callback starts. Calls for several collections share the thread; a
    batch is split by collection.
    """

    def __init__(
        self, classifier: Classifier, max_batch: int = 64, wait_s: float = 0.0, foreground: Foreground | None = None
    ):
        """`foreground`: where classify calls are counted as serving work (shared with the HTTP layer)."""
        self.clf = classifier
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._read = ThreadPoolExecutor(1, thread_name_prefix="knnclass-classify")
        self._write = ThreadPoolExecutor(1, thread_name_prefix="knnclass-write")
        self._pending: collections.deque[ClassifyJob] = collections.deque()
        self._running = False  # a batch is on the classify thread
        self._timer: asyncio.TimerHandle | None = None  # the wait budget of the next batch
        self._started = False
        self.observe: Any = None  # callable(encode_s, search_s, batch_texts) set by the app
        self.foreground = foreground or Foreground()

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
        while self._pending:  # requests are drained before this; anything left is refused
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(OverloadedError("the service is stopping; retry"))
        self._read.shutdown(wait=True)
        self._write.shutdown(wait=True)

    # --- classify ------------------------------------------------------------------------
    async def classify(self, request: ClassifyRequest, clf: Classifier | None = None) -> ClassifyResult:
        """Classify with `clf` (default: the engine's classifier), batched with concurrent calls."""
        assert self._started, "engine not started"
        fut: asyncio.Future[ClassifyResult] = asyncio.get_running_loop().create_future()
        self._pending.append(ClassifyJob(request, fut, clf or self.clf))
        self.foreground.enter()
        try:
            if not self._running:
                if self.wait_s <= 0 or self._texts_pending() >= self.max_batch:
                    self._next_batch()
                elif self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(self.wait_s, self._next_batch)
            return await fut
        finally:
            self.foreground.leave()

    def _texts_pending(self) -> int:
        return sum(len(j.request.texts) or 1 for j in self._pending)

    def _next_batch(self) -> None:
        """Start a batch of the pending calls on the classify thread (up to max_batch texts)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running or not self._pending or not self._started:
            return
        jobs = [self._pending.popleft()]
        n = len(jobs[0].request.texts) or 1
        while self._pending and n < self.max_batch:
            jobs.append(self._pending.popleft())
            n += len(jobs[-1].request.texts) or 1
        self._running = True
        done = asyncio.get_running_loop().run_in_executor(self._read, self._run_batch, jobs)
        done.add_done_callback(lambda f: self._deliver(jobs, f))

    def _deliver(self, jobs: list[ClassifyJob], done: asyncio.Future[list[ClassifyResult | KnnclassError]]) -> None:
        """Hand a finished batch's answers to its callers (an error to each), then start the next."""
        self._running = False
        error = done.exception() if not done.cancelled() else OverloadedError("the service is stopping")
        results = done.result() if error is None else [error] * len(jobs)
        for j, r in zip(jobs, results, strict=True):
            if not j.future.done():  # a caller gone (disconnected) is skipped
                if isinstance(r, BaseException):
                    j.future.set_exception(r)
                else:
                    j.future.set_result(r)
        if self._pending:
            self._next_batch()

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
