"""The serving engine's micro-batching: calls arriving during a batch go together in the next."""

from __future__ import annotations

import asyncio
import threading
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
