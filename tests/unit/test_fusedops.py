"""knnclass's fused onnxruntime ops (_fusedops.c): each op against numpy, and the graph rewrite."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from knnclass.encoders._rowwise import FUSED_DOMAIN, quantize_rows  # noqa: E402
from knnclass.encoders.onnx import fused_ops_library  # noqa: E402

RNG = np.random.default_rng(7)
_erf = np.vectorize(math.erf)


@pytest.fixture(scope="module")
def lib() -> Path:
    path = fused_ops_library()
    assert path is not None, "knnclass/encoders/_fusedops*.so is not built: run `pip install -e .` (needs a C compiler)"
    return path


def _session(lib: Path, model: onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.register_custom_ops_library(str(lib))
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _op(
    lib: Path, op: str, inputs: dict[str, np.ndarray], outputs: list[str], threads: int = 1, **attrs: object
) -> list[np.ndarray]:
    """Run one fused op on `inputs` (on `threads` intra-op threads)."""
    node = helper.make_node(op, list(inputs), outputs, domain=FUSED_DOMAIN, **attrs)
    graph = helper.make_graph(
        [node],
        "one",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in inputs],
        [
            helper.make_tensor_value_info(o, TensorProto.UINT8 if o in ("q", "cq") else TensorProto.FLOAT, None)
            for o in outputs
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(FUSED_DOMAIN, 1)])
    return [np.asarray(a) for a in _session(lib, model, threads).run(outputs, inputs)]


def _rowquant_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-8) / 127
    return np.clip(np.rint(x / s) + 128, 0, 255).astype(np.uint8), s.astype(np.float32)


def _check_quant(q: np.ndarray, s: np.ndarray, x: np.ndarray) -> None:
    """q, s quantise the rows of x as the stock graph does (ties may round either way)."""
    rq, rs = _rowquant_ref(x)
    np.testing.assert_allclose(s, rs, rtol=1e-5)
    diff = np.abs(q.astype(int) - rq.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _ln(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b


def test_row_quant(lib: Path) -> None:
    x = RNG.normal(size=(2, 5, 40)).astype(np.float32)
    x[0, 1] = 0  # an all-zero row: scale floors at 1e-8 / 127, all codes 128
    x[1, 3] *= 1000  # an outlier row keeps its own scale
    q, s = _op(lib, "RowQuant", {"x": x}, ["q", "s"])
    assert q.dtype == np.uint8 and q.shape == x.shape and s.shape == (2, 5, 1)
    _check_quant(q, s, x)
    assert (q[0, 1] == 128).all()
    many = RNG.normal(size=(7, 19, 40)).astype(np.float32)  # 133 rows: several 32-row work items
    one = _op(lib, "RowQuant", {"x": many}, ["q", "s"])
    wide = _op(lib, "RowQuant", {"x": many}, ["q", "s"], threads=3)
    assert all(np.array_equal(a, b) for a, b in zip(one, wide, strict=True))


def test_scale_bias(lib: Path) -> None:
    y = RNG.normal(size=(3, 4, 24)).astype(np.float32)
    s = RNG.uniform(0.1, 2, size=(3, 4, 1)).astype(np.float32)
    b = RNG.normal(size=24).astype(np.float32)
    (z,) = _op(lib, "ScaleBias", {"y": y, "s": s, "b": b}, ["z"])
    np.testing.assert_allclose(z, y * s + b, rtol=1e-6, atol=1e-6)


def test_scale_bias_gelu_quant(lib: Path) -> None:
    y = RNG.normal(scale=4, size=(2, 3, 70)).astype(np.float32)
    y[0, 0, :5] = [-30, -12, 0, 12, 30]  # GELU's far tails
    s = RNG.uniform(0.5, 2, size=(2, 3, 1)).astype(np.float32)
    b = RNG.normal(size=70).astype(np.float32)
    q, s2 = _op(lib, "ScaleBiasGeluQuant", {"y": y, "s": s, "b": b}, ["q", "s2"])
    ref = _gelu((y * s + b).astype(np.float64))
    _check_quant(q, s2, ref.astype(np.float32))


@pytest.mark.parametrize("quant", [False, True])
def test_scale_bias_add_layer_norm(lib: Path, quant: bool) -> None:
    y = RNG.normal(size=(2, 3, 48)).astype(np.float32)
    s = RNG.uniform(0.5, 2, size=(2, 3, 1)).astype(np.float32)
    b, g, be = (RNG.normal(size=48).astype(np.float32) for _ in range(3))
    r = RNG.normal(size=(2, 3, 48)).astype(np.float32)
    outs = ["z", "q", "s2"] if quant else ["z"]
    op = "ScaleBiasAddLayerNormQuant" if quant else "ScaleBiasAddLayerNorm"
    got = _op(lib, op, {"y": y, "s": s, "b": b, "r": r, "g": g, "be": be}, outs, epsilon=1e-12)
    ref = _ln(y * s + b + r, g, be, 1e-12)
    np.testing.assert_allclose(got[0], ref, rtol=1e-4, atol=1e-5)
    if quant:
        _check_quant(got[1], got[2], got[0])


def _attention_ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, m: np.ndarray, heads: int) -> np.ndarray:
    b, t, hd = q.shape
    d = hd // heads

    def split(x: np.ndarray) -> np.ndarray:
        return x.reshape(b, t, heads, d).transpose(0, 2, 1, 3).astype(np.float64)

    scores = split(q) @ split(k).transpose(0, 1, 3, 2) / math.sqrt(d) + m.astype(np.float64)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ split(v)).transpose(0, 2, 1, 3).reshape(b, t, hd)


@pytest.mark.parametrize(("t", "head_dim", "per_query"), [(5, 32, True), (17, 32, False), (33, 24, True)])
def test_attention(lib: Path, t: int, head_dim: int, per_query: bool) -> None:
    heads, b, hd = 3, 2, 3 * head_dim
    y = {n: RNG.normal(size=(b, t, hd)).astype(np.float32) for n in ("yq", "yk", "yv")}
    s = RNG.uniform(0.5, 2, size=(b, t, 1)).astype(np.float32)
    bias = {n: RNG.normal(size=hd).astype(np.float32) for n in ("bq", "bk", "bv")}
    lengths = [t, max(1, t - 3)]
    keep = np.arange(t)[None, :] < np.array(lengths)[:, None]
    m = np.where(keep, 0, np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]
    if per_query:
        m = np.broadcast_to(m, (b, 1, t, t)).copy()
    q, k, v = (y[f"y{x}"] * s + bias[f"b{x}"] for x in "qkv")
    ref = _attention_ref(q, k, v, m, heads)
    feed = {**y, "s": s, **bias, "m": m}
    (got,) = _op(lib, "Attention", feed, ["c"], num_heads=heads)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    cq, cs = _op(lib, "AttentionQuant", feed, ["cq", "cs"], num_heads=heads)
    _check_quant(cq, cs, got)
    # split over threads (text x head items): the same bits
    wide = _op(lib, "AttentionQuant", feed, ["cq", "cs"], threads=3, num_heads=heads)
    np.testing.assert_array_equal(wide[0], cq)
    np.testing.assert_array_equal(wide[1], cs)
    # a padded text's real tokens get exactly what they get alone
    n = lengths[1]
    alone = {k: (x[1:, :n] if x.ndim == 3 else x) for k, x in feed.items() if k != "m"}
    alone["m"] = m[1:, :, :n, :n] if per_query else m[1:, :, :, :n]
    (one,) = _op(lib, "Attention", alone, ["c"], num_heads=heads)
    np.testing.assert_array_equal(one[0], got[1, :n])


def test_bad_shapes_are_errors_not_crashes(lib: Path) -> None:
    q = RNG.normal(size=(2, 4, 12)).astype(np.float32)
    one, b = np.ones((2, 4, 1), np.float32), np.zeros(12, np.float32)

    def attention(m: np.ndarray, heads: int, scales: np.ndarray = one, bias: np.ndarray = b) -> None:
        feed = {"yq": q, "yk": q, "yv": q, "s": scales, "bq": bias, "bk": bias, "bv": bias, "m": m}
        _op(lib, "Attention", feed, ["c"], num_heads=heads)

    with pytest.raises(Exception, match="mask bias"):
        attention(np.zeros((2, 3), np.float32), 3)
    with pytest.raises(Exception, match="multiple of num_heads"):
        attention(np.zeros((2, 4), np.float32), 5)
    with pytest.raises(Exception, match="row scale per token"):
        attention(np.zeros((2, 4), np.float32), 3, scales=np.ones((2, 1, 1), np.float32))
    with pytest.raises(Exception, match="biases must match"):
        attention(np.zeros((2, 4), np.float32), 3, bias=np.zeros(6, np.float32))
    with pytest.raises(Exception, match="bias length"):
        _op(lib, "ScaleBias", {"y": q, "s": np.ones((2, 4, 1), np.float32), "b": np.ones(5, np.float32)}, ["z"])
    with pytest.raises(Exception, match="row scale"):
        _op(lib, "ScaleBias", {"y": q, "s": np.ones((2, 1, 1), np.float32), "b": np.ones(12, np.float32)}, ["z"])


# -- the graph rewrite: a transformer-like block, stock per-row ops vs fused ops --------

H = 32
W = {
    f"w{i}": RNG.normal(scale=0.3, size=shape).astype(np.float32) for i, shape in enumerate([(H, 64), (64, H), (H, 8)])
}
B = {f"b{i}": RNG.normal(size=n).astype(np.float32) for i, n in enumerate([64, H, 8])}
LN = {"g": RNG.uniform(0.5, 1.5, size=H).astype(np.float32), "be": RNG.normal(size=H).astype(np.float32)}
CONST = {"sqrt2": np.array(math.sqrt(2), np.float32), "one": np.array(1, np.float32), "half": np.array(0.5, np.float32)}


def _block(path: Path) -> Path:
    """y = LayerNorm(gelu(x W0 + b0) W1 + b1 + x) W2 + b2, GELU spelt out as the HF export does."""
    mk = helper.make_node
    nodes = [
        mk("MatMul", ["x", "w0"], ["h0"], name="/ffn/in/MatMul"),
        mk("Add", ["b0", "h0"], ["a0"]),
        mk("Div", ["a0", "sqrt2"], ["g0"]),
        mk("Erf", ["g0"], ["g1"]),
        mk("Add", ["g1", "one"], ["g2"]),
        mk("Mul", ["a0", "g2"], ["g3"]),
        mk("Mul", ["g3", "half"], ["g4"]),
        mk("MatMul", ["g4", "w1"], ["h1"], name="/ffn/out/MatMul"),
        mk("Add", ["b1", "h1"], ["a1"]),
        mk("Add", ["a1", "x"], ["r1"]),
        mk("LayerNormalization", ["r1", "g", "be"], ["n1"], axis=-1, epsilon=1e-12),
        mk("MatMul", ["n1", "w2"], ["h2"], name="/head/MatMul"),
        mk("Add", ["b2", "h2"], ["y"]),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in {**W, **B, **LN, **CONST}.items()]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_fused_graph_matches_the_stock_per_row_graph(lib: Path, tmp_path: Path) -> None:
    src = _block(tmp_path / "block.onnx")
    quantize_rows(src, tmp_path / "stock.onnx", keep=lambda n: False)
    quantize_rows(src, tmp_path / "fused.onnx", keep=lambda n: False, fused=True)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node]
    assert sorted(ops) == sorted(
        ["RowQuant", "ScaleBiasGeluQuant", "ScaleBiasAddLayerNormQuant", "ScaleBias"] + ["MatMulIntegerToFloat"] * 3
    ), ops
    x = RNG.normal(size=(3, 6, H)).astype(np.float32)
    x[2, 4] *= 50
    fused = _session(lib, onnx.load(str(tmp_path / "fused.onnx"))).run(["y"], {"x": x})[0]
    stock = ort.InferenceSession(str(tmp_path / "stock.onnx"), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[
        0
    ]
    assert np.linalg.norm(fused - stock) / np.linalg.norm(stock) < 2e-3
    alone = _session(lib, onnx.load(str(tmp_path / "fused.onnx"))).run(["y"], {"x": x[:1]})[0]
    np.testing.assert_array_equal(alone, fused[:1])


def test_unmatched_patterns_are_left_alone(tmp_path: Path) -> None:
    """A bias that is not a constant vector: the Mul and Add stay, only the row quantisation is fused."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="/m/MatMul"),
        helper.make_node("Add", ["h", "bias_in"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4]),
            helper.make_tensor_value_info("bias_in", TensorProto.FLOAT, ["b", 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])],
        [numpy_helper.from_array(RNG.normal(size=(4, 3)).astype(np.float32), "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "g.onnx"))
    quantize_rows(tmp_path / "g.onnx", tmp_path / "f.onnx", keep=lambda n: False, fused=True)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "f.onnx")).graph.node]
    assert ops == ["RowQuant", "MatMulIntegerToFloat", "Mul", "Add"]


def test_ops_version_is_the_same_in_python_and_c() -> None:
    import re

    from knnclass.encoders._rowwise import FUSED_OPS_VERSION

    src = (Path(__file__).resolve().parents[2] / "knnclass" / "encoders" / "_fusedops.c").read_text()
    found = re.search(r"#define KC_OPS_VERSION (\d+)", src)
    assert found is not None and int(found.group(1)) == FUSED_OPS_VERSION


def test_the_built_library_is_the_version_python_expects(lib: Path) -> None:
    """Fails on a stale build (the C sources changed since it was compiled): rebuild with scripts/setup.sh."""
    from knnclass.encoders._rowwise import FUSED_OPS_VERSION
    from knnclass.encoders.onnx import fused_ops_version

    assert fused_ops_version(lib) == FUSED_OPS_VERSION


def test_a_stale_build_is_detected_at_load_and_not_used(
    lib: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from knnclass.encoders import _rowwise
    from knnclass.encoders.onnx import built_ops_library

    monkeypatch.setattr(_rowwise, "FUSED_OPS_VERSION", _rowwise.FUSED_OPS_VERSION + 1)
    with caplog.at_level(logging.WARNING, logger="knnclass.encoders.onnx"):
        assert fused_ops_library() is None
    assert built_ops_library() == lib  # still there, just not used
    assert "stale build" in caplog.text and "scripts/setup.sh" in caplog.text and "pip install -e ." in caplog.text
    monkeypatch.undo()
    assert fused_ops_library() == lib


def test_a_library_without_a_version_counts_as_stale(tmp_path: Path) -> None:
    from knnclass.encoders.onnx import fused_ops_version

    (tmp_path / "old.so").write_bytes(b"\0" * 64)  # does not load, or (an old build) has no version symbol
    assert fused_ops_version(tmp_path / "old.so") is None
