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
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ExportError

if TYPE_CHECKING:
    import onnx

__all__ = ["FUSED_DOMAIN", "FUSED_OPS_VERSION", "quantize_rows"]

FUSED_DOMAIN = "ai.knnclass"  # the ops of _fusedops.c
# Bump with any change to an op's inputs, outputs or arithmetic (and KC_OPS_VERSION in
# _fusedops.c): encoders exported for other versions then run their stock graph.
FUSED_OPS_VERSION = 3

_ZERO_POINT = 128  # symmetric int8 rows stored as uint8 (u8 x s8 kernels): 0 maps to 128
_SHARED: dict[str, np.ndarray] = {
    "rq_127": np.array(127.0, np.float32),
    "rq_eps": np.array(1e-8, np.float32),
    "rq_one": np.array(1.0, np.float32),
    "rq_zp": np.array(_ZERO_POINT, np.uint8),
    "rq_last": np.array([-1], np.int64),
}


def quantize_rows(
    src: Path, dst: Path, keep: Callable[[str], bool], weight_max: int = 127, *, fused: bool = False
) -> int:
    """Rewrite `src` into `dst`; MatMuls whose name `keep` accepts stay fp32.

    `weight_max` 63 (7-bit weights) avoids saturating the 16-bit sums of AVX2 u8 x s8
    kernels; VNNI and ARM accumulate in 32 bits and use 127. With `fused` the row
    quantisation and the elementwise work after each GEMM use knnclass's own ops
    (_fusedops.c, see `fuse_epilogues`): same arithmetic, far fewer passes over memory.
    Returns how many MatMuls were quantised.
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
        q = f"rq{len(quantised)}"
        if x not in quantised and fused:
            nodes.append(helper.make_node("RowQuant", [x], [f"{q}_q", f"{q}_scale"], domain=FUSED_DOMAIN))
        elif x not in quantised:
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
        xq, scale = quantised.setdefault(x, (f"{q}_q", f"{q}_scale"))
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
    if fused:
        inits = {**weights, **{t.name: t for t in added}}
        nodes = fuse_attention(fuse_epilogues(nodes, inits), inits)
        nodes = _prune(_toposort(nodes), {o.name for o in graph.output})
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for domain in ("com.microsoft", *((FUSED_DOMAIN,) if fused else ())):
        if not any(o.domain == domain for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(domain, 1))
    onnx.save(model, str(dst))
    return count


def fuse_epilogues(nodes: list[onnx.NodeProto], inits: dict[str, onnx.TensorProto]) -> list[onnx.NodeProto]:
    """Fold `Mul(row scale) -> Add(bias)` after each int8 GEMM into one fused op.

    The Add is then extended, where the graph allows, by an exact-GELU (Div, Erf, Add,
    Mul, Mul) whose only use is the next RowQuant (-> ScaleBiasGeluQuant), or by a
    residual Add and a LayerNormalization (-> ScaleBiasAddLayerNorm[Quant]). Anything
    that does not match exactly is left as it is.
    """
    from onnx import helper

    g = _Graph(nodes, inits)
    users, only_user, other, const_is = g.users, g.only_user, g.other, g.const_is

    drop: set[int] = set()
    put: dict[int, onnx.NodeProto] = {}  # fused node, at the first node it replaces
    order = {id(n): i for i, n in enumerate(nodes)}
    for gemm in nodes:
        if gemm.op_type != "MatMulIntegerToFloat":
            continue
        mul = only_user(gemm.output[0], "Mul")
        add = only_user(mul.output[0], "Add") if mul is not None else None
        if mul is None or add is None:
            continue
        bias = other(add, mul.output[0])
        if bias not in inits or len(inits[bias].dims) != 1:
            continue
        y, scale, a = gemm.output[0], other(mul, gemm.output[0]), add.output[0]
        chain = [mul, add]
        fused: onnx.NodeProto | None = None
        # exact GELU: a * 0.5 * (1 + erf(a / sqrt 2)), feeding only a RowQuant
        users_a = users.get(a, [])
        div = next((u for u in users_a if u.op_type == "Div" and u.input[0] == a), None)
        if len(users_a) == 2 and div is not None and const_is(div.input[1], 2**0.5):
            erf = only_user(div.output[0], "Erf")
            one = only_user(erf.output[0], "Add") if erf is not None else None
            m1 = only_user(one.output[0], "Mul") if one is not None else None
            m2 = only_user(m1.output[0], "Mul") if m1 is not None else None
            rq = only_user(m2.output[0], "RowQuant") if m2 is not None else None
            if (
                erf is not None
                and one is not None
                and m1 is not None
                and m2 is not None
                and rq is not None
                and const_is(other(one, erf.output[0]), 1.0)
                and other(m1, one.output[0]) == a
                and const_is(other(m2, m1.output[0]), 0.5)
            ):
                chain += [div, erf, one, m1, m2, rq]
                fused = helper.make_node("ScaleBiasGeluQuant", [y, scale, bias], list(rq.output), domain=FUSED_DOMAIN)
        # residual Add, then LayerNormalization over the last axis
        res = only_user(a, "Add")
        ln = only_user(res.output[0], "LayerNormalization") if res is not None else None
        if (
            fused is None
            and res is not None
            and ln is not None
            and g.attr(ln, "axis", -1) == -1
            and len([o for o in ln.output if o]) == 1
            and len(ln.input) == 3
        ):
            eps = float(g.attr(ln, "epsilon", 1e-5))  # type: ignore[arg-type]
            inputs = [y, scale, bias, other(res, a), ln.input[1], ln.input[2]]
            rq = next((u for u in users.get(ln.output[0], []) if u.op_type == "RowQuant"), None)
            chain += [res, ln]
            if rq is None:
                fused = helper.make_node(
                    "ScaleBiasAddLayerNorm", inputs, [ln.output[0]], domain=FUSED_DOMAIN, epsilon=eps
                )
            else:
                chain.append(rq)
                fused = helper.make_node(
                    "ScaleBiasAddLayerNormQuant",
                    inputs,
                    [ln.output[0], *rq.output],
                    domain=FUSED_DOMAIN,
                    epsilon=eps,
                )
        if fused is None:
            fused = helper.make_node("ScaleBias", [y, scale, bias], [a], domain=FUSED_DOMAIN)
        drop.update(id(n) for n in chain)
        put[min(order[id(n)] for n in chain)] = fused
    out = []
    for i, n in enumerate(nodes):
        if i in put:
            out.append(put[i])
        elif id(n) not in drop:
            out.append(n)
    return out  # not yet in topological order: quantize_rows sorts once, after every fusion


class _Graph:
    """Lookups over a node list: producers, users and the scalar constants."""

    def __init__(self, nodes: list[onnx.NodeProto], inits: dict[str, onnx.TensorProto]):
        from onnx import numpy_helper

        self.consts: dict[str, float] = {}
        for n in nodes:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                v = numpy_helper.to_array(n.attribute[0].t)
                if v.size == 1:
                    self.consts[n.output[0]] = float(v.reshape(()))
        for name, t in inits.items():
            if np.prod(t.dims, dtype=np.int64) == 1:
                self.consts[name] = float(numpy_helper.to_array(t).reshape(()))
        self.producer = {o: n for n in nodes for o in n.output}
        self.users: dict[str, list[onnx.NodeProto]] = {}
        for n in nodes:
            for i in n.input:
                self.users.setdefault(i, []).append(n)

    def only_user(self, t: str, op: str) -> onnx.NodeProto | None:
        u = self.users.get(t, [])
        return u[0] if len(u) == 1 and u[0].op_type == op else None

    def made_by(self, t: str, op: str) -> onnx.NodeProto | None:
        n = self.producer.get(t)
        return n if n is not None and n.op_type == op else None

    @staticmethod
    def other(n: onnx.NodeProto, t: str) -> str:
        return str(n.input[1] if n.input[0] == t else n.input[0])

    def const_is(self, t: str, value: float) -> bool:
        return t in self.consts and abs(self.consts[t] - value) < 1e-6 * max(1.0, abs(value))

    def attr(self, n: onnx.NodeProto, name: str, default: object = None) -> object:
        from onnx import helper

        return next((helper.get_attribute_value(a) for a in n.attribute if a.name == name), default)

    def perm(self, n: onnx.NodeProto) -> list[int]:
        """A Transpose's permutation."""
        return [int(i) for i in self.attr(n, "perm", []) or []]  # type: ignore[attr-defined]


def fuse_attention(nodes: list[onnx.NodeProto], inits: dict[str, onnx.TensorProto]) -> list[onnx.NodeProto]:
    """Replace each self-attention block as Hugging Face BERT exports it with one Attention op.

    Matched: Q, K, V [B, T, H*D], each a ScaleBias of an int8 GEMM with the same row
    scales -> Reshape [B, T, H, D] -> Transpose (K to [B, H, D, T]), Q and K each times
    sqrt(1/sqrt(D)) (computed from the shape), MatMul, Add mask bias, Softmax, MatMul V,
    Transpose, Reshape back to [B, T, H*D]; when that result only feeds a RowQuant, the op
    quantises it too (AttentionQuant). Other graphs are kept.
    """
    from onnx import helper

    g = _Graph(nodes, inits)

    def unshape(t: str, perm: list[int]) -> tuple[str, int] | None:
        """(the [B, T, H*D] tensor, H) when `t` is Transpose(perm)(Reshape(x, [B, T, H, D]))."""
        tr = g.made_by(t, "Transpose")
        rs = g.made_by(tr.input[0], "Reshape") if tr is not None and g.perm(tr) == perm else None
        shape = g.made_by(rs.input[1], "Concat") if rs is not None else None
        if rs is None or shape is None or len(shape.input) != 4 or shape.input[2] not in g.consts:
            return None
        return rs.input[0], int(g.consts[shape.input[2]])

    def scaled(t: str) -> tuple[str, str] | None:
        """(x, the scale's root) when `t` is Mul(x, Sqrt(root))."""
        mul = g.made_by(t, "Mul")
        for x, f in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])) if mul is not None else ():
            sq = g.made_by(f, "Sqrt")
            if sq is not None:
                return x, sq.input[0]
        return None

    def through_cast(t: str) -> str:
        c = g.made_by(t, "Cast")
        return c.input[0] if c is not None else t

    def inv_sqrt_head_dim(root: str, q_t: str) -> bool:
        """`root` is 1 / sqrt(last dim of `q_t`), as the export computes it from the shape."""
        div = g.made_by(through_cast(root), "Div")
        sq = g.made_by(div.input[1], "Sqrt") if div is not None and g.const_is(div.input[0], 1.0) else None
        sl = g.made_by(through_cast(sq.input[0]), "Slice") if sq is not None else None
        if sl is None or len(sl.input) < 3 or not g.const_is(sl.input[1], -1.0):
            return False
        shp = g.made_by(sl.input[0], "Shape")
        return shp is not None and shp.input[0] == q_t

    replace: dict[int, onnx.NodeProto] = {}
    for sm in nodes:
        if sm.op_type != "Softmax" or g.attr(sm, "axis", -1) not in (-1, 3):
            continue
        add = g.made_by(sm.input[0], "Add")
        if add is None:
            continue
        mm1 = g.made_by(add.input[0], "MatMul") or g.made_by(add.input[1], "MatMul")
        if mm1 is None:
            continue
        mask = g.other(add, mm1.output[0])
        qs, ks = scaled(mm1.input[0]), scaled(mm1.input[1])
        if qs is None or ks is None or qs[1] != ks[1] or not inv_sqrt_head_dim(qs[1], qs[0]):
            continue
        q, k = unshape(qs[0], [0, 2, 1, 3]), unshape(ks[0], [0, 2, 3, 1])
        mm2 = g.only_user(sm.output[0], "MatMul")
        v = unshape(mm2.input[1], [0, 2, 1, 3]) if mm2 is not None and mm2.input[0] == sm.output[0] else None
        back = g.only_user(mm2.output[0], "Transpose") if mm2 is not None else None
        merge = g.only_user(back.output[0], "Reshape") if back is not None else None
        if q is None or k is None or v is None or back is None or merge is None:
            continue
        if g.perm(back) != [0, 2, 1, 3] or not q[1] == k[1] == v[1]:
            continue
        # Q, K and V straight from their GEMMs: their ScaleBias is done inside the op
        sb = [n for n in (g.made_by(x[0], "ScaleBias") for x in (q, k, v)) if n is not None]
        if len(sb) != 3 or len({n.input[1] for n in sb}) != 1:
            continue
        inputs = [*(n.input[0] for n in sb), sb[0].input[1], *(n.input[2] for n in sb), mask]
        rq = g.only_user(merge.output[0], "RowQuant")
        if rq is not None:
            replace[id(rq)] = helper.make_node(
                "AttentionQuant", inputs, list(rq.output), domain=FUSED_DOMAIN, num_heads=q[1]
            )
        else:
            replace[id(merge)] = helper.make_node(
                "Attention", inputs, list(merge.output), domain=FUSED_DOMAIN, num_heads=q[1]
            )
    # the replaced block's other nodes are left for _prune
    return [replace.get(id(n), n) for n in nodes]


def _prune(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Drop the nodes nothing needed reads (`nodes` in topological order)."""
    needed = set(outputs)
    kept = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(n.input)
    return kept[::-1]


def _toposort(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """`nodes` in an order where each comes after its producers, otherwise as given."""
    produced = {o for n in nodes for o in n.output}
    ready = {i for n in nodes for i in n.input if i not in produced}
    out: list[onnx.NodeProto] = []
    pending = list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all(i in ready or not i for i in n.input):
                out.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ExportError("per-row int8: the fused graph has a cycle")
        pending = rest
    return out
