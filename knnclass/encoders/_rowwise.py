"""Per-row int8 quantisation of an ONNX graph's MatMuls (needs `onnx`, from the train extra).

Each MatMul with a constant weight becomes: one scale per activation row (per token,
symmetric, from that row's max |x|), a per-axis QuantizeLinear, an int8 GEMM with
per-column weight scales (MatMulIntegerToFloat) and a Mul by the row scales. Compared
with onnxruntime's dynamic quantisation (one scale for the whole batch) a token with
large activations no longer coarsens every other token's grid, so all MatMuls can be
int8 and a text's vector does not depend on what else is in its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import ExportError

__all__ = ["quantize_rows"]

_ZERO_POINT = 128  # symmetric int8 rows stored as uint8 (u8 x s8 kernels): 0 maps to 128
_SHARED: dict[str, np.ndarray] = {
    "rq_127": np.array(127.0, np.float32),
    "rq_eps": np.array(1e-8, np.float32),
    "rq_one": np.array(1.0, np.float32),
    "rq_zp": np.array(_ZERO_POINT, np.uint8),
    "rq_last": np.array([-1], np.int64),
}


def quantize_rows(src: Path, dst: Path, keep: Callable[[str], bool], weight_max: int = 127) -> int:
    """Rewrite `src` into `dst`; MatMuls whose name `keep` accepts stay fp32.

    `weight_max` 63 (7-bit weights) avoids saturating the 16-bit sums of AVX2 u8 x s8
    kernels; VNNI and ARM accumulate in 32 bits and use 127. Returns how many MatMuls
    were quantised.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        raise ExportError(f"per-row int8 needs ONNX opset >= 13 (per-axis QuantizeLinear); the graph has {opset}")

    def reduce(op: str, x: str, out: str) -> onnx.NodeProto:
        if opset >= 18:  # axes became an input in opset 18
            return helper.make_node(op, [x, "rq_last"], [out], keepdims=1)
        return helper.make_node(op, [x], [out], axes=[-1], keepdims=1)

    weights = {i.name: i for i in graph.initializer}
    added: list[onnx.TensorProto] = [numpy_helper.from_array(v, k) for k, v in _SHARED.items()]
    nodes: list[onnx.NodeProto] = []
    quantised: dict[str, tuple[str, str]] = {}  # activation -> (its uint8 rows, its row scales)
    count = 0
    for node in graph.node:
        w = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if w is None or len(w.dims) != 2 or keep(node.name):
            nodes.append(node)
            continue
        x = node.input[0]
        if x not in quantised:
            q = f"rq{len(quantised)}"
            added.append(numpy_helper.from_array(np.array([-1, w.dims[0]], np.int64), f"{q}_2d"))
            nodes += [
                # max |x| per row as max(max x, -min x): two reads, no |x| tensor written
                reduce("ReduceMax", x, f"{q}_hi"),
                reduce("ReduceMin", x, f"{q}_lo"),
                helper.make_node("Neg", [f"{q}_lo"], [f"{q}_nlo"]),
                helper.make_node("Max", [f"{q}_hi", f"{q}_nlo", "rq_eps"], [f"{q}_amax"]),
                helper.make_node("Div", [f"{q}_amax", "rq_127"], [f"{q}_scale"]),
                helper.make_node("Reshape", [f"{q}_scale", "rq_last"], [f"{q}_scale1d"]),
                helper.make_node("Shape", [f"{q}_scale1d"], [f"{q}_rows"]),
                helper.make_node(
                    "ConstantOfShape",
                    [f"{q}_rows"],
                    [f"{q}_zp"],
                    value=helper.make_tensor("zp", TensorProto.UINT8, [1], [_ZERO_POINT]),
                ),
                helper.make_node("Reshape", [x, f"{q}_2d"], [f"{q}_x2d"]),
                helper.make_node("QuantizeLinear", [f"{q}_x2d", f"{q}_scale1d", f"{q}_zp"], [f"{q}_q2d"], axis=0),
                helper.make_node("Shape", [x], [f"{q}_shape"]),
                helper.make_node("Reshape", [f"{q}_q2d", f"{q}_shape"], [f"{q}_q"]),
            ]
            quantised[x] = (f"{q}_q", f"{q}_scale")
        xq, scale = quantised[x]
        wf = numpy_helper.to_array(w).astype(np.float32)
        w_scale = (np.maximum(np.abs(wf).max(axis=0), 1e-12) / weight_max).astype(np.float32)
        wq = np.clip(np.round(wf / w_scale), -weight_max, weight_max).astype(np.int8)
        p = f"rw{count}"
        added += [
            numpy_helper.from_array(wq, f"{p}_w"),
            numpy_helper.from_array(w_scale, f"{p}_wscale"),
            numpy_helper.from_array(np.zeros(wq.shape[1], np.int8), f"{p}_wzp"),
        ]
        nodes += [
            helper.make_node(
                "MatMulIntegerToFloat",
                [xq, f"{p}_w", "rq_one", f"{p}_wscale", "rq_zp", f"{p}_wzp"],
                [f"{p}_y"],
                domain="com.microsoft",
                name=f"{node.name}_rowwise_int8",
            ),
            helper.make_node("Mul", [f"{p}_y", scale], list(node.output), name=f"{node.name}_row_scale"),
        ]
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))
    return count
