"""`python -m knnclass.store._build SHARD_DIR`: build a Qdrant Edge shard's vector index in this process.

A service runs it on a copy of a served shard (EdgeStore.begin_index_build), so the minutes of
GIL-holding HNSW construction happen outside the process answering requests.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m knnclass.store._build SHARD_DIR", file=sys.stderr)
        return 2
    from qdrant_edge import EdgeShard

    try:
        shard = EdgeShard.load(argv[0])
        try:
            shard.optimize()
            shard.flush()
        finally:
            shard.close()
    except Exception as e:
        print(f"index build of {argv[0]} failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
