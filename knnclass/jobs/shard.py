"""Deterministic 1/N slices of a ticket file and checkpoints for resumable bulk indexing.

A shard is every N-th block of SHARD_BLOCK consecutive examples, so every run (and every
pod of an Indexed Job) agrees on it whatever its --batch-size, and the N shards together
are exactly the whole file. With an index batch size that divides the block, each
embedding batch also holds the same examples as in an unsharded run (for encoders whose
vectors depend on their batch-mates, e.g. per-batch int8, the collections are then
identical; the default per-token int8 encoder does not depend on them).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data import Example
from ..errors import InputError
from ..store._files import atomic_write_text

__all__ = ["SHARD_BLOCK", "Checkpoint", "ShardSpec", "file_digest", "parse_shard", "select_shard"]

SHARD_BLOCK = 256  # rows per block; fixed, so shards run with different batch sizes still tile the file


@dataclass(frozen=True)
class ShardSpec:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> ShardSpec:
    """'I/N' with 0 <= I < N (I as JOB_COMPLETION_INDEX)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise InputError(f"a shard must look like I/N (e.g. 0/4), not {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise InputError(f"shard {text}: need 0 <= I < N")
    return ShardSpec(i, n)


def select_shard(examples: Sequence[Example], spec: ShardSpec, block: int = SHARD_BLOCK) -> list[Example]:
    """The examples of shard `spec`: blocks I, I + N, I + 2N, ... of `block` examples, in file order."""
    if spec.count == 1:
        return list(examples)
    step = spec.count * block
    return [e for b in range(spec.index * block, len(examples), step) for e in examples[b : b + block]]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class Checkpoint:
    """Records how many batches of one (file, shard, collection, batch size) were acknowledged."""

    def __init__(self, directory: Path, source: Path, spec: ShardSpec, collection: str, batch_size: int):
        self.key = f"{collection}-{file_digest(source)}-{spec.index}of{spec.count}-b{batch_size}"
        self.path = directory / f"{self.key}.json"
        self.directory = directory

    def done_batches(self) -> int:
        try:
            return int(json.loads(self.path.read_text())["done_batches"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, OSError):
            return 0  # a damaged checkpoint only costs re-checking; ids make re-upserts harmless

    def record(self, done_batches: int, total_batches: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"done_batches": done_batches, "total_batches": total_batches}))
