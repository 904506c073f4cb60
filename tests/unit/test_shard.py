"""Sharded bulk indexing: deterministic partition, checkpoint resume, N shards == 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from knnclass.classifier import Classifier
from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.errors import InputError
from knnclass.jobs.shard import Checkpoint, ShardSpec, parse_shard, select_shard
from knnclass.store.edge import EdgeStore

EX = [
    Example(f"id{i}", f"ticket {i} about {'card' if i % 3 else 'pin'}", "card" if i % 3 else "pin") for i in range(200)
]


@pytest.mark.parametrize(
    ("text", "spec"), [("0/1", ShardSpec(0, 1)), ("3/4", ShardSpec(3, 4)), (" 1 / 2 ", ShardSpec(1, 2))]
)
def test_parse(text: str, spec: ShardSpec) -> None:
    assert parse_shard(text) == spec


@pytest.mark.parametrize("text", ["4/4", "-1/4", "1/0", "a/b", "1", ""])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(InputError):
        parse_shard(text)


def test_shards_partition_the_file() -> None:
    parts = [select_shard(EX, ShardSpec(i, 4), 16) for i in range(4)]
    ids = [e.id for p in parts for e in p]
    assert sorted(ids) == sorted(e.id for e in EX) and len(set(ids)) == len(EX)
    assert [len(p) for p in parts] == [56, 48, 48, 48]  # 13 blocks of 16, the last holding 8
    assert select_shard(EX, ShardSpec(2, 4), 16) == parts[2]  # deterministic


def test_shards_do_not_depend_on_the_batch_size() -> None:
    """The CLI shards by fixed blocks, so shards run with different --batch-size still tile the file."""
    many = [Example(f"id-{i}", f"text {i}", "a") for i in range(600)]
    parts = [select_shard(many, ShardSpec(i, 2)) for i in range(2)]
    assert [len(p) for p in parts] == [344, 256]  # blocks 0 and 2 (256 + 88), block 1
    assert sorted(e.id for p in parts for e in p) == sorted(e.id for e in many)


def _dump(store: EdgeStore) -> dict[str, tuple[str, str, list[float]]]:
    ref = store.ref("tickets")
    out = {}
    for batch, vecs in store.scroll(ref, 64, with_vectors=True):
        assert vecs is not None
        for e, v in zip(batch, vecs, strict=True):
            out[e.id] = (e.text, e.label, np.round(v, 6).tolist())
    return out


def test_four_shards_equal_one(tmp_path: Path) -> None:
    enc = FakeEncoder(topics=["card", "pin"])
    one = EdgeStore(tmp_path / "one")
    Classifier(one, "tickets", encoder=enc).index(EX, batch_size=16)
    four = EdgeStore(tmp_path / "four")
    for i in (0, 3, 1, 2):  # shard 0 creates the collection; the rest in any order
        Classifier(four, "tickets", encoder=enc).index(
            select_shard(EX, ShardSpec(i, 4), 16), batch_size=16, create=i == 0
        )
    assert _dump(one) == _dump(four)
    one.close()
    four.close()


def test_checkpoint_resume_after_crash(tmp_path: Path) -> None:
    src = tmp_path / "t.csv"
    src.write_text("text,category\n" + "".join(f"t{i},a\n" for i in range(10)))
    ck = Checkpoint(tmp_path / "ck", src, ShardSpec(1, 2), "tickets", 16)
    assert ck.done_batches() == 0
    store = EdgeStore(tmp_path / "s")
    clf = Classifier(store, "tickets", encoder=FakeEncoder())

    class Crash(Exception):
        pass

    def crash_after_two(k: int) -> None:
        ck.record(k, 13)
        if k == 2:
            raise Crash

    with pytest.raises(Crash):
        clf.index(EX, batch_size=16, on_batch=crash_after_two)
    assert ck.done_batches() == 2 and store.count(clf.ref()) == 32
    seen: list[int] = []
    clf.index(EX, batch_size=16, skip_batches=ck.done_batches(), on_batch=lambda k: (seen.append(k), ck.record(k, 13)))
    assert seen[0] == 3 and seen[-1] == 13 and store.count(clf.ref()) == 200
    assert ck.done_batches() == 13
    store.close()
    # another file, shard or batch size gets its own checkpoint
    assert Checkpoint(tmp_path / "ck", src, ShardSpec(0, 2), "tickets", 16).path != ck.path
