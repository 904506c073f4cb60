"""Export a sentence-transformers model to a self-contained ONNX encoder dir.

Needs the `train` extra (torch, sentence-transformers, optimum); imported lazily so
serving never pays for it. Every export passes the parity gate (parity.py) against the
torch model. The parts: metadata.py (settings, identity, the metadata file),
quantization.py (which int8 scheme), parity.py (the gate); this module drives them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import DependencyError, ExportError, InputError
from .metadata import (
    METADATA_FILE,
    ExportSettings,
    encoder_identity,
    export_metadata,
    source_fingerprint,
    st_config,
    write_metadata,
)
from .onnx import CUDA_MODEL_FILE, FUSED_MODEL_FILE
from .parity import CUDA_FP16, FUSED, PARITY_SENTENCES, ParityGate
from .quantization import BEST_ORDER, KEEP_FP32, quantize_int8, resolve_target

__all__ = [
    "BEST_ORDER",
    "KEEP_FP32",
    "PARITY_SENTENCES",
    "ExportSettings",
    "check_out_dir",
    "export_best",
    "export_encoder",
    "require_model_dir",
    "resolve_target",
    "source_fingerprint",
    "st_config",
]


def _require_train() -> None:
    try:
        import optimum.onnxruntime  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError as e:
        raise DependencyError(
            f"exporting a model to ONNX needs the train extra ({e.name} is missing): pip install 'knnclass[train]'"
        ) from None


def _export_onnx(src: Path, work: Path, settings: ExportSettings) -> Path:
    """The graph to serve, built in `work`: fp32 (work/fp32/model.onnx), optimised, then quantised."""
    from optimum.onnxruntime import ORTModelForFeatureExtraction

    model = ORTModelForFeatureExtraction.from_pretrained(str(src), export=True)
    fp32_dir = work / "fp32"
    model.save_pretrained(str(fp32_dir))
    onnx_path = fp32_dir / "model.onnx"
    if settings.optimize:
        from optimum.onnxruntime import ORTOptimizer
        from optimum.onnxruntime.configuration import AutoOptimizationConfig

        level = settings.optimize.upper()
        if level not in ("O1", "O2", "O3", "O4"):
            raise InputError(f"optimize must be O1, O2, O3 or O4, not {settings.optimize!r}")
        opt_dir = work / "opt"
        cfg = getattr(AutoOptimizationConfig, level)()
        ORTOptimizer.from_pretrained(model).optimize(save_dir=str(opt_dir), optimization_config=cfg)
        onnx_path = opt_dir / "model_optimized.onnx"
    if settings.quantize == "int8":
        return quantize_int8(onnx_path, work, settings)
    if settings.quantize != "none":
        raise InputError(f"quantize must be int8 or none, not {settings.quantize!r}")
    return onnx_path


def _write_fp16(fp32_model: Path, dst: Path) -> None:
    """The fp32 graph in fp16 (inputs and output keep their types), for the CUDA provider."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(fp32_model)), keep_io_types=True), str(dst))


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Silence the export libraries' deprecation and tracer warnings (not knnclass's errors)."""
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger()  # configures the library's root logger now, so the level set below sticks
    loggers = [logging.getLogger(n) for n in ("", "transformers", "optimum")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def require_model_dir(src: Path) -> None:
    """Refuse a dir that is not a local sentence-transformers / Hugging Face model."""
    if not (src / "config.json").is_file():
        raise InputError(f"{src}: not a sentence-transformers / Hugging Face model dir (no config.json)")


def check_out_dir(out: Path) -> None:
    """`out` may be new, empty or an earlier encoder dir (replaced); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file, not a directory for the encoder")
    if out.is_dir() and any(out.iterdir()) and not (out / METADATA_FILE).is_file():
        raise InputError(
            f"{out}: a non-empty directory that is not a knnclass encoder; "
            "choose a new or empty one (an earlier encoder dir is replaced)"
        )


def export_encoder(
    src: str | Path,
    out: str | Path,
    settings: ExportSettings | None = None,
    name: str | None = None,
    parity_data: Path | None = None,
) -> dict[str, Any]:
    """Export the model as `_export_encoder` does, without the libraries' warnings."""
    _require_train()
    with _quiet_libraries():
        return _export_encoder(src, out, settings, name, parity_data)


def _export_encoder(
    src: str | Path,
    out: str | Path,
    settings: ExportSettings | None,
    name: str | None,
    parity_data: Path | None,
) -> dict[str, Any]:
    """Export `src` (a local sentence-transformers dir) to `out`; returns the metadata.

    The dir appears atomically: it is built beside `out` and renamed into place only
    after the parity gate passes. With `parity_data` (a dir with train.csv and test.csv)
    a quantised export must also keep kNN accuracy within `max_knn_drop_pt` of fp32.
    """
    settings = settings or ExportSettings()
    src = Path(src).resolve()
    out = Path(out)
    check_out_dir(out)
    require_model_dir(src)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    cfg = st_config(src)
    name = name or src.name
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        from sentence_transformers import SentenceTransformer
        from transformers import AutoTokenizer

        build = work / "build"
        model_file = _export_onnx(src, build, settings)
        final = work / "encoder"
        final.mkdir()
        shutil.copy2(model_file, final / "model.onnx")
        fused = (build / FUSED_MODEL_FILE).is_file()
        if fused:
            shutil.copy2(build / FUSED_MODEL_FILE, final / FUSED_MODEL_FILE)
        if settings.cuda:
            _write_fp16(build / "fp32" / "model.onnx", final / CUDA_MODEL_FILE)
        tok = AutoTokenizer.from_pretrained(str(src))  # type: ignore[no-untyped-call]
        tok.save_pretrained(str(final))
        if not (final / "tokenizer.json").exists():
            raise ExportError(f"{src}: the model has no fast tokenizer (tokenizer.json); knnclass needs one")
        st = SentenceTransformer(str(src), device="cpu")
        get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        meta = export_metadata(
            identity=encoder_identity(name, settings.quantize, final / "model.onnx", final / "tokenizer.json", cfg),
            name=name,
            src=src,
            dim=int(get_dim() or 0),
            pad_id=int(tok.pad_token_id or 0),
            settings=settings,
            target=resolve_target(settings.target),
            cfg=cfg,
        )
        if settings.cuda:
            meta["cuda_model_file"] = CUDA_MODEL_FILE
        if fused:  # not part of the identity: the same arithmetic as model.onnx
            from ._rowwise import FUSED_OPS_VERSION

            meta.update(fused_model_file=FUSED_MODEL_FILE, fused_ops_version=FUSED_OPS_VERSION)
        write_metadata(final, meta)
        reference = st.encode(PARITY_SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
        graphs = {
            "": "model.onnx",
            **({FUSED: FUSED_MODEL_FILE} if fused else {}),
            **({CUDA_FP16: CUDA_MODEL_FILE} if settings.cuda else {}),
        }
        gate = ParityGate(final, graphs, meta, settings, name)
        meta["parity"] = gate.results
        gate.check_cosine(reference)
        if parity_data is not None and settings.quantize != "none":
            ref_dir = work / "fp32-encoder"
            shutil.copytree(final, ref_dir)
            shutil.copy2(build / "fp32" / "model.onnx", ref_dir / "model.onnx")
            write_metadata(ref_dir, {**meta, "fused_model_file": None})
            gate.check_knn(ref_dir, Path(parity_data))
        meta["export_seconds"] = round(time.perf_counter() - t0, 1)
        write_metadata(final, meta)
        if out.exists():
            shutil.rmtree(out)
        os.replace(final, out)
        return meta
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_best(
    src: str | Path, out: str | Path, settings: ExportSettings, name: str | None = None, parity_data: Path | None = None
) -> dict[str, Any]:
    """The fastest int8 variant that passes the parity gate (or fp32 with quantize none)."""
    if settings.quantize == "none":
        return export_encoder(src, out, settings, name, parity_data)
    failures = []
    for activations, keep in BEST_ORDER:
        try:
            meta = export_encoder(
                src, out, replace(settings, activations=activations, keep_fp32=keep), name, parity_data
            )
        except ExportError as e:
            failures.append(f"{activations}/{keep}: {e}")
            continue
        meta["rejected_variants"] = failures
        write_metadata(Path(out), meta)
        return meta
    raise ExportError("no int8 variant passed the parity gate (quantize none exports fp32): " + "; ".join(failures))
