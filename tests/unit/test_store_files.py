"""The hot path's file cache and the search ef chosen from the collection size."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from knnclass.store import HnswSettings
from knnclass.store._files import FileCache, atomic_write_text


def test_file_cache_rereads_a_replaced_file_even_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "CURRENT"
    atomic_write_text(path, "v1")
    reads: list[str] = []

    def parse(p: Path) -> str:
        reads.append(p.read_text())
        return reads[-1]

    cache = FileCache()
    assert cache.get(path, parse) == "v1" and cache.get(path, parse) == "v1"
    assert reads == ["v1"]  # the second call was a stat only
    st = os.stat(path)
    atomic_write_text(path, "v2")  # same size; the same mtime forced below: only the inode differs
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.get(path, parse) == "v2" and reads == ["v1", "v2"]
    path.unlink()
    with pytest.raises(FileNotFoundError):
        cache.get(path, parse)


def test_edge_store_meta_and_pointer_follow_writes(tmp_path: Path) -> None:
    from knnclass.store import CollectionMeta
    from knnclass.store.edge import EdgeStore

    st = EdgeStore(tmp_path / "s")
    a = st.create_version("t", CollectionMeta("e", "e", 4))
    b = st.create_version("t", CollectionMeta("e", "e", 4))
    st.switch("t", a.version)
    assert st.current_version("t") == "v1" and st.get_meta(a).rule is None
    st.set_meta(a, st.get_meta(a).with_(rule={"vote": "majority", "size": "k", "value": 3}))
    st.switch("t", b.version)
    assert st.current_version("t") == "v2" and st.get_meta(a).rule == {"vote": "majority", "size": "k", "value": 3}
    st.close()


@pytest.mark.parametrize(
    ("n", "limit", "filtered", "ef"),
    [(10_000, 4, False, 64), (10_000, 50, False, 100), (100_000, 10, False, 128), (1_000_000, 10, False, 512)],
)
def test_auto_ef_scales_with_size(n: int, limit: int, filtered: bool, ef: int) -> None:
    assert HnswSettings().search_ef(n, limit, filtered) == ef


def test_auto_ef_under_a_filter_and_a_fixed_ef() -> None:
    assert HnswSettings().search_ef(1_000, 4, filtered=True) == 512
    assert HnswSettings(ef=32).search_ef(10**6, 4) == 32 and HnswSettings(ef=32).search_ef(10, 40) == 40
    with pytest.raises(Exception, match="out of range"):
        HnswSettings(ef=0)
