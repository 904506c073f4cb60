"""The real MiniLM export on knnclass's fused ops: matched graph, same vectors, fallbacks."""

from __future__ import annotations

import collections
import csv
import logging
from pathlib import Path

import numpy as np
import pytest

from knnclass.encoders import OnnxEncoder
from knnclass.encoders import onnx as onnx_module
from knnclass.errors import EncoderError


@pytest.fixture(scope="module")
def texts(data_dir: Path) -> list[str]:
    rows = list(csv.DictReader((data_dir / "test.csv").open()))
    return [r["text"] for r in rows[::10]]  # 308 tickets, short and long


def _dir(real_encoder) -> Path:  # type: ignore[no-untyped-def]
    return Path(real_encoder.source)


def test_default_encoder_runs_the_fused_graph(real_encoder) -> None:  # type: ignore[no-untyped-def]
    assert real_encoder.graph == "model_fused.onnx"
    assert real_encoder.meta["fused_model_file"] == "model_fused.onnx"
    parity = real_encoder.meta["parity"]
    assert parity["fused_cosine_min"] >= 0.98 and parity["fused_cosine_mean"] >= 0.995


def test_every_block_of_minilm_is_fused(real_encoder) -> None:  # type: ignore[no-untyped-def]
    """The Hugging Face export's attention, GELU and residual + LayerNorm patterns all matched."""
    onnx = pytest.importorskip("onnx")
    ops = collections.Counter(n.op_type for n in onnx.load(str(_dir(real_encoder) / "model_fused.onnx")).graph.node)
    assert ops["AttentionQuant"] == 6 and ops["ScaleBiasGeluQuant"] == 6
    assert ops["ScaleBiasAddLayerNormQuant"] == 11 and ops["ScaleBiasAddLayerNorm"] == 1  # the last feeds pooling
    assert ops["RowQuant"] == 1 and "ScaleBias" not in ops  # the embeddings' LayerNorm out; Q/K/V's in attention
    assert ops["MatMulIntegerToFloat"] == 36
    assert not {"Softmax", "Erf", "QuantizeLinear", "Transpose"} & set(ops)


def test_fused_and_stock_graphs_give_the_same_vectors(real_encoder, texts: list[str]) -> None:  # type: ignore[no-untyped-def]
    stock = OnnxEncoder(_dir(real_encoder), graph="model.onnx").embed(texts)
    fused = real_encoder.embed(texts)
    cos = np.sum(stock * fused, axis=1)
    assert cos.min() > 0.99 and cos.mean() > 0.999, (cos.min(), cos.mean())
    # per-row int8 on the fused ops: a ticket alone gets exactly its vector from the batch
    alone = np.stack([real_encoder.embed([t])[0] for t in texts[:40]])
    np.testing.assert_array_equal(alone, fused[:40])


def test_switched_off_or_unbuilt_ops_run_the_stock_graph(real_encoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KNNCLASS_FUSED_OPS", "0")
    assert onnx_module.fused_ops_library() is None
    enc = OnnxEncoder(_dir(real_encoder))
    assert enc.graph == "model.onnx"
    with pytest.raises(EncoderError, match="compiled ops"):
        OnnxEncoder(_dir(real_encoder), graph="model_fused.onnx")


def test_ops_that_fail_to_load_fall_back_to_the_stock_graph(real_encoder, monkeypatch, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    bogus = tmp_path / "not-a-library.so"
    bogus.write_bytes(b"\0" * 64)
    monkeypatch.setattr(onnx_module, "fused_ops_library", lambda: bogus)
    with caplog.at_level(logging.WARNING, logger="knnclass.encoders.onnx"):
        enc = OnnxEncoder(_dir(real_encoder))
    assert enc.graph == "model.onnx"
    assert "fused ops unusable" in caplog.text
    assert enc.embed(["my card has not arrived"]).shape == (1, 384)


def test_a_fused_graph_for_other_ops_runs_the_stock_graph(real_encoder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import shutil

    old = tmp_path / "old-encoder"
    shutil.copytree(_dir(real_encoder), old)
    meta = json.loads((old / "knnclass-encoder.json").read_text())
    meta["fused_ops_version"] -= 1  # exported by an earlier knnclass: its ops had other inputs
    (old / "knnclass-encoder.json").write_text(json.dumps(meta))
    assert OnnxEncoder(old).graph == "model.onnx"


def test_a_stale_ops_build_runs_the_stock_graph(real_encoder, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """A library compiled from older sources than this knnclass's: detected at load, not a crash."""
    from knnclass.encoders._rowwise import FUSED_OPS_VERSION

    assert OnnxEncoder(_dir(real_encoder)).graph == "model_fused.onnx"  # the encoder was exported for these ops
    monkeypatch.setattr(onnx_module, "fused_ops_version", lambda library: FUSED_OPS_VERSION - 1)
    onnx_module._checked_library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="knnclass.encoders.onnx"):
            enc = OnnxEncoder(_dir(real_encoder))
        assert enc.graph == "model.onnx"
        assert "stale build" in caplog.text and "scripts/setup.sh" in caplog.text
        assert enc.embed(["my card has not arrived"]).shape == (1, 384)
        with pytest.raises(EncoderError, match="compiled ops"):
            OnnxEncoder(_dir(real_encoder), graph="model_fused.onnx")
    finally:
        onnx_module._checked_library.cache_clear()


@pytest.mark.parametrize("fault", ["wrong vectors", "does not load"])
def test_a_fused_graph_that_fails_is_dropped_not_fatal(encoder_cache, tmp_path, monkeypatch, fault: str) -> None:  # type: ignore[no-untyped-def]
    from knnclass.encoders import default_model_dir
    from knnclass.encoders import export as export_module
    from knnclass.encoders import parity as parity_module

    class BrokenFused(OnnxEncoder):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            if fault == "does not load" and self.graph == "model_fused.onnx":
                raise EncoderError("cannot load encoder: no kernel for RowQuant")

        def embed(self, texts):  # type: ignore[no-untyped-def]
            got = super().embed(texts)
            return got[::-1].copy() if self.graph == "model_fused.onnx" else got

    monkeypatch.setattr(parity_module, "OnnxEncoder", BrokenFused)
    meta = export_module.export_encoder(default_model_dir(), tmp_path / "enc", name="all-MiniLM-L6-v2")
    expected = "cosine min" if fault == "wrong vectors" else "does not load"
    assert expected in meta["fused_rejected"] and "fused_model_file" not in meta
    assert not (tmp_path / "enc" / "model_fused.onnx").exists()
    assert OnnxEncoder(tmp_path / "enc").graph == "model.onnx"
