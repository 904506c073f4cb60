"""The serving engine's micro-batching: calls arriving during a batch go together in the next."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from knnclass.classifier import ClassifyRequest
from knnclass.errors import InputError
from knnclass.service.engine import Engine


class Recorder:
    """Stands in for a Classifier: records each batch's texts; the first batch waits for `release`."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()

    def classify_batch(self, requests: Sequence[ClassifyRequest], timings: Any = None) -> list[Any]:
        if not self.batches:
            self.release.wait(10)
        self.batches.append([t for r in requests for t in r.texts])
        return [InputError(f"bad {r.texts[0]}") if r.texts[0] == "bad" else f"ok {r.texts[0]}" for r in requests]


def _run(engine: Engine, texts: list[str], gap_s: float = 0.0) -> list[Any]:
    async def main() -> list[Any]:
        await engine.start()

        async def one(i: int, t: str) -> Any:
            await asyncio.sleep(gap_s * i)
            try:
                return await engine.classify(ClassifyRequest([t]))
            except InputError as e:
                return str(e)

        tasks = [asyncio.create_task(one(i, t)) for i, t in enumerate(texts)]
        await asyncio.sleep(0.05)  # every call is pending behind the first batch
        rec.release.set()
        out = await asyncio.gather(*tasks)
        await engine.stop()
        return list(out)

    rec: Recorder = engine.clf  # type: ignore[assignment]
    return asyncio.run(main())


def test_calls_during_a_batch_go_together_in_the_next_and_errors_stay_in_their_slot() -> None:
    rec = Recorder()
    texts = [f"t{i}" for i in range(10)]
    texts[4] = "bad"
    out = _run(Engine(rec, max_batch=4), texts)  # type: ignore[arg-type]
    assert out == [f"ok {t}" if t != "bad" else "bad bad" for t in texts]
    assert rec.batches == [["t0"], ["t1", "t2", "t3", "bad"], ["t5", "t6", "t7", "t8"], ["t9"]]


def test_wait_budget_gathers_calls_into_one_batch() -> None:
    rec = Recorder()
    rec.release.set()
    out = _run(Engine(rec, max_batch=64, wait_s=0.2), ["a", "b", "c"], gap_s=0.01)  # type: ignore[arg-type]
    assert out == ["ok a", "ok b", "ok c"] and rec.batches == [["a", "b", "c"]]


def test_a_crashed_batch_fails_its_callers_and_the_engine_goes_on() -> None:
    class Crashing(Recorder):
        def classify_batch(self, requests: Sequence[ClassifyRequest], timings: Any = None) -> list[Any]:
            if requests[0].texts[0] == "boom":
                raise RuntimeError("boom")
            return super().classify_batch(requests, timings)

    rec = Crashing()
    rec.release.set()
    engine = Engine(rec)  # type: ignore[arg-type]

    async def main() -> tuple[str, Any]:
        await engine.start()
        with pytest.raises(RuntimeError):
            await engine.classify(ClassifyRequest(["boom"]))
        after = await engine.classify(ClassifyRequest(["fine"]))
        await engine.stop()
        return "raised", after

    assert asyncio.run(main()) == ("raised", "ok fine")


def test_background_work_waits_while_classify_calls_are_pending_or_running() -> None:
    rec = Recorder()
    engine = Engine(rec)  # type: ignore[arg-type]
    resumed: list[float] = []

    def background() -> None:  # what the store route does between two slices
        engine.foreground.wait(max_wait_s=5.0)
        resumed.append(time.monotonic())

    async def main() -> tuple[float, float]:
        await engine.start()
        t0 = time.monotonic()
        engine.foreground.wait(max_wait_s=5.0)  # nothing in flight: no wait
        idle_wait = time.monotonic() - t0
        call = asyncio.create_task(engine.classify(ClassifyRequest(["a"])))
        await asyncio.sleep(0.02)
        worker = threading.Thread(target=background)
        worker.start()
        await asyncio.sleep(0.2)
        assert not resumed, "background work went on while a classify call was running"
        released = time.monotonic()
        rec.release.set()
        assert await call == "ok a"
        await asyncio.to_thread(worker.join, 5)
        await engine.stop()
        return idle_wait, resumed[0] - released

    idle_wait, after_release = asyncio.run(main())
    assert idle_wait < 0.05
    assert 0 <= after_release < 2.0


def test_background_work_still_progresses_under_a_saturating_load() -> None:
    rec = Recorder()  # the first batch never finishes until released
    engine = Engine(rec)  # type: ignore[arg-type]

    async def main() -> float:
        await engine.start()
        call = asyncio.create_task(engine.classify(ClassifyRequest(["a"])))
        await asyncio.sleep(0.02)
        t0 = time.monotonic()
        await asyncio.to_thread(engine.foreground.wait, 0.1)
        waited = time.monotonic() - t0
        rec.release.set()
        await call
        await engine.stop()
        return waited

    assert 0.09 <= asyncio.run(main()) < 2.0
