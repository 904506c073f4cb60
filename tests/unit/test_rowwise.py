"""Per-row int8 rewrite on a small synthetic graph: accuracy, batch invariance, kept MatMuls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from knnclass.encoders._rowwise import quantize_rows  # noqa: E402
from knnclass.encoders.quantization import resolve_target  # noqa: E402

# Without VNNI, u8 x s8 products saturate 16-bit accumulators: export uses 7-bit weights there.
WMAX = 127 if resolve_target("auto") != "avx2" else 63
from knnclass.errors import ExportError  # noqa: E402

RNG = np.random.default_rng(0)
W1 = RNG.normal(size=(16, 32)).astype(np.float32)
W2 = RNG.normal(size=(32, 8)).astype(np.float32)
W3 = RNG.normal(size=(16, 8)).astype(np.float32)


def _graph(path: Path, opset: int = 18) -> Path:
    """y = relu(x @ W1) @ W2 + x @ W3 (x @ W1 and x @ W3 share their input)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="/first/MatMul"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["a"], name="/second/MatMul"),
        helper.make_node("MatMul", ["x", "w3"], ["b"], name="/side/MatMul"),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])],
        [numpy_helper.from_array(w, n) for w, n in ((W1, "w1"), (W2, "w2"), (W3, "w3"))],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def _reference(x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ W1, 0) @ W2 + x @ W3


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(["y"], {"x": x})[0])


@pytest.mark.parametrize("opset", [13, 18])
def test_all_matmuls_int8_close_to_fp32(tmp_path: Path, opset: int) -> None:
    out = tmp_path / "q.onnx"
    assert quantize_rows(_graph(tmp_path / "g.onnx", opset), out, keep=lambda n: False, weight_max=WMAX) == 3
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("MatMulIntegerToFloat") == 3 and "MatMul" not in ops
    assert ops.count("QuantizeLinear") == 2  # x is quantised once for its two MatMuls
    x = RNG.normal(size=(3, 5, 16)).astype(np.float32)
    got, ref = _run(out, x), _reference(x)
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert 0 < rel < 0.02, rel


def test_a_row_does_not_depend_on_its_batch(tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    quantize_rows(_graph(tmp_path / "g.onnx"), out, keep=lambda n: False, weight_max=WMAX)
    x = RNG.normal(size=(2, 4, 16)).astype(np.float32)
    x[1, 2] *= 1000  # one outlier token in the batch
    both = _run(out, x)
    alone = _run(out, x[:1])
    assert np.array_equal(both[:1], alone)
    ref = _reference(x[:1])
    assert np.linalg.norm(alone - ref) / np.linalg.norm(ref) < 0.02


def test_kept_matmuls_stay_fp32(tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    assert quantize_rows(_graph(tmp_path / "g.onnx"), out, keep=lambda n: "/second/" in n) == 2
    names = {n.name: n.op_type for n in onnx.load(str(out)).graph.node}
    assert names["/second/MatMul"] == "MatMul"


def test_seven_bit_weights(tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    quantize_rows(_graph(tmp_path / "g.onnx"), out, keep=lambda n: False, weight_max=63)
    weights = [
        numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer if i.data_type == TensorProto.INT8
    ]
    assert weights and max(int(np.abs(w).max()) for w in weights) == 63
    x = RNG.normal(size=(2, 3, 16)).astype(np.float32)
    ref = _reference(x)
    assert np.linalg.norm(_run(out, x) - ref) / np.linalg.norm(ref) < 0.03


def test_old_opset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="opset >= 13"):
        quantize_rows(_graph(tmp_path / "g.onnx", opset=12), tmp_path / "q.onnx", keep=lambda n: False)
