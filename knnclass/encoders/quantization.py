"""Which int8 scheme an export uses: the CPU it is for (7-bit weights without VNNI), the
activation scales (per row or per tensor), which MatMuls stay fp32, and the rewrite itself."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .metadata import ExportSettings
from .onnx import FUSED_MODEL_FILE, fused_ops_library

__all__ = ["BEST_ORDER", "KEEP_FP32", "TARGETS", "Int8Scheme", "int8_scheme", "quantize_int8", "resolve_target"]

TARGETS = ("avx512_vnni", "avx2", "arm64")

# Which MatMuls stay fp32, by node name.
KEEP_FP32: dict[str, Callable[[str], bool]] = {
    "none": lambda n: False,
    "ffn_out": lambda n: "/output/dense" in n and "attention" not in n,
    "ffn_out+att_out": lambda n: "/output/dense" in n,
    "ffn_out+edge_layers": lambda n: ("/output/dense" in n and "attention" not in n) or "/layer.0/" in n,
}


# int8 variants (activation scales, MatMuls kept fp32) in the order `export_best` tries
# them: fastest first, as measured on 2 AVX-512 VNNI cores (benchmarks/encoder.py).
BEST_ORDER = [
    ("per_row", "none"),
    ("per_row", "ffn_out"),
    ("per_tensor", "ffn_out"),
    ("per_tensor", "ffn_out+att_out"),
    ("per_tensor", "ffn_out+edge_layers"),
]


def resolve_target(target: str) -> str:
    """The CPU target for int8 kernels; 'auto' reads this machine's CPU flags."""
    if target != "auto":
        if target not in TARGETS:
            raise InputError(f"target must be auto, avx512_vnni, avx2 or arm64, not {target!r}")
        return target
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "avx512_vnni" if ("avx512_vnni" in flags or "avx512vnni" in flags) else "avx2"


@dataclass(frozen=True)
class Int8Scheme:
    """How int8 weights are stored for one CPU target."""

    target: str
    # Without VNNI, u8 x s8 products can saturate the 16-bit accumulators of the AVX2
    # kernels: 7-bit weights (63). VNNI and ARM accumulate in 32 bits and use 127.
    weight_max: int

    @property
    def reduce_range(self) -> bool:
        """onnxruntime's name for 7-bit weights (per-tensor dynamic quantisation)."""
        return self.weight_max < 127


def int8_scheme(target: str) -> Int8Scheme:
    """The int8 scheme for `target` ('auto': this machine)."""
    resolved = resolve_target(target)
    return Int8Scheme(resolved, 63 if resolved == "avx2" else 127)


def quantize_int8(onnx_path: Path, work: Path, settings: ExportSettings) -> Path:
    """The int8 graph of the fp32 `onnx_path`, written into `work` as `settings` say.

    Per-row activation scales also write the fused-ops graph (FUSED_MODEL_FILE) into
    `work` where `settings.fused` and the ops are built here.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = work / "model_int8.onnx"
    keep = KEEP_FP32.get(settings.keep_fp32)
    if keep is None:
        raise InputError(f"keep_fp32 must be one of {', '.join(KEEP_FP32)}, not {settings.keep_fp32!r}")
    scheme = int8_scheme(settings.target)
    if settings.activations == "per_row":
        from ._rowwise import quantize_rows

        quantize_rows(onnx_path, out, keep, scheme.weight_max)
        if settings.fused and fused_ops_library() is not None:
            quantize_rows(onnx_path, work / FUSED_MODEL_FILE, keep, scheme.weight_max, fused=True)
        return out
    if settings.activations != "per_tensor":
        raise InputError(f"activations must be per_row or per_tensor, not {settings.activations!r}")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    exclude = [n.name for n in graph.node if n.op_type == "MatMul" and keep(n.name)]
    quantize_dynamic(
        str(onnx_path),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=settings.per_channel,
        reduce_range=scheme.reduce_range,
        op_types_to_quantize=["MatMul", "Gemm", "Attention"],
        nodes_to_exclude=exclude,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return out
