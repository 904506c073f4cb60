"""An exported encoder's metadata: the settings it was exported with, its identity, and the
stamp (knnclass-encoder.json) written beside its graphs and read back when it is loaded."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

from ..errors import EncoderError, ExportError

__all__ = [
    "METADATA_FILE",
    "ExportSettings",
    "PoolingConfig",
    "encoder_identity",
    "read_metadata",
    "source_fingerprint",
    "st_config",
    "write_metadata",
]

METADATA_FILE = "knnclass-encoder.json"
# what every encoder dir's metadata holds (read_metadata refuses one without)
REQUIRED_KEYS = ("identity", "model_file", "dim", "max_tokens", "pooling")


@dataclass(frozen=True)
class ExportSettings:
    """How a model is exported. Part of the encoder's identity."""

    quantize: str = "int8"  # int8 | none
    optimize: str | None = None  # O1 | O2 | O3 | O4 | None
    per_channel: bool = True  # per_tensor only: per-row int8 always scales weights per column
    # int8 activation scales: per_row (one per token, knnclass's rewrite, see _rowwise)
    # or per_tensor (onnxruntime's dynamic quantisation: one per batch).
    activations: str = "per_row"
    # MatMuls left in fp32 (see quantization.KEEP_FP32). With per-tensor scales the FFN output
    # projections' GELU outliers coarsen the whole batch; per-row scales need none kept.
    keep_fp32: str = "none"
    target: str = "auto"  # auto | avx512_vnni | avx2 | arm64
    cuda: bool = False  # also write an fp16 graph for onnxruntime's CUDA provider
    # per-row int8: also write the graph on knnclass's fused ops (run where they are built)
    fused: bool = True
    min_cosine: float = 0.98
    mean_cosine: float = 0.995
    max_knn_drop_pt: float = 0.3


class PoolingConfig(TypedDict):
    """What a sentence-transformers dir says about turning token states into one vector."""

    pooling: str  # mean | cls
    normalize: bool
    max_tokens: int


def st_config(src: Path) -> PoolingConfig:
    """Pooling, normalisation and max length from a sentence-transformers dir."""
    pooling, normalize, max_tokens = "mean", True, 512
    modules_path = src / "modules.json"
    if modules_path.exists():
        modules = json.loads(modules_path.read_text())
        normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
        for m in modules:
            if m.get("type", "").endswith("Pooling"):
                cfg = json.loads((src / m["path"] / "config.json").read_text())
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif cfg.get("pooling_mode_mean_tokens"):
                    pooling = "mean"
                else:
                    raise ExportError(f"{src}: unsupported pooling {cfg}; knnclass supports mean and cls")
    sbert = src / "sentence_bert_config.json"
    if sbert.exists():
        max_tokens = int(json.loads(sbert.read_text()).get("max_seq_length", max_tokens))
    return {"pooling": pooling, "normalize": normalize, "max_tokens": max_tokens}


def source_fingerprint(src: Path) -> str:
    """Content hash of a model dir, so a changed model never reuses a stale export."""
    h = hashlib.sha256()
    for p in sorted(src.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts):
            h.update(str(p.relative_to(src)).encode())
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def file_hash(*paths: Path, extra: str = "") -> str:
    """A short content hash of files (in order) and a string."""
    h = hashlib.sha256(extra.encode())
    for p in paths:
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def encoder_identity(name: str, quantize: str, model_file: Path, tokenizer_file: Path, cfg: PoolingConfig) -> str:
    """`NAME-QUANTISATION-HASH`, the hash over the graph, the tokenizer and the pooling
    settings (see base.same_encoder: NAME is only a label)."""
    digest = file_hash(model_file, tokenizer_file, extra=json.dumps(cfg, sort_keys=True))
    return f"{name}-{quantize}-{digest}"


def export_metadata(
    *,
    identity: str,
    name: str,
    src: Path,
    dim: int,
    pad_id: int,
    settings: ExportSettings,
    target: str,
    cfg: PoolingConfig,
) -> dict[str, Any]:
    """The metadata of a new export (format 1), before its parity results are added."""
    return {
        "format": 1,
        "identity": identity,
        "source_model": name,
        "source_fingerprint": source_fingerprint(src),
        "model_file": "model.onnx",
        "dim": dim,
        "pad_id": pad_id,
        "export": {**asdict(settings), "target": target},
        **cfg,
    }


def write_metadata(model_dir: Path, meta: dict[str, Any]) -> None:
    """Write (or rewrite) an encoder dir's metadata."""
    (model_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2))


def read_metadata(model_dir: Path) -> dict[str, Any]:
    """The export metadata of a knnclass encoder dir."""
    path = model_dir / METADATA_FILE
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise EncoderError(f"{model_dir}: not a knnclass encoder dir (no {METADATA_FILE})") from None
    except (OSError, ValueError) as e:
        raise EncoderError(f"{path}: unreadable encoder metadata: {e}") from None
    for key in REQUIRED_KEYS:
        if key not in meta:
            raise EncoderError(f"{path}: encoder metadata lacks {key!r}")
    return meta
