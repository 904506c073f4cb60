"""Export a sentence-transformers model to a self-contained ONNX encoder dir.

Needs the `train` extra (torch, sentence-transformers, optimum); imported lazily so
serving never pays for it. Every export passes a parity gate against the torch model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DependencyError, EncoderError, ExportError, InputError
from .onnx import CUDA_MODEL_FILE, FUSED_MODEL_FILE, METADATA_FILE, OnnxEncoder, fused_ops_library

__all__ = ["PARITY_SENTENCES", "ExportSettings", "export_encoder", "source_fingerprint", "st_config"]

# Fixed, real ticket-like sentences for the parity gate (varied length and topic).
PARITY_SENTENCES = [
    "I still have not received my new card, I ordered over a week ago.",
    "My card was stolen yesterday, please block it immediately!",
    "How do I change my PIN?",
    "Why was I charged a fee for withdrawing cash from an ATM abroad?",
    "The exchange rate applied to my payment looks wrong.",
    "I can't log in to the app, it says my account is locked.",
    "Someone made transactions on my account that I don't recognise.",
    "Can I top up my account with a cheque?",
    "My transfer to a friend has been pending for three days, when will it arrive?",
    "Where can I find my account statement for last month?",
    "The refund from the shop still isn't showing up in my balance.",
    "What currencies can I hold in my account?",
    "Please close my account, I no longer want to use your service.",
    "I was charged twice for the same purchase at the supermarket.",
    "How long does identity verification take?",
    "My contactless payments stopped working this morning.",
    "Is there a limit on how much money I can send abroad in one day?",
    "Help",
    "The ATM swallowed my card and didn't give me any cash but my balance went down.",
    "Can I get a virtual card for online shopping?",
    "Why did my top up by bank transfer fail?",
    "I need to update my home address and phone number.",
    "The app keeps crashing when I try to open the cards tab on my phone.",
    "Do you support Apple Pay and Google Pay?",
    "I think my card has been compromised, there are payments from another country.",
    "What is the fee for receiving money from a US bank account?",
    "How can I link my new card to the app? The code is not accepted.",
    "Why is my salary not in my account yet? It was sent on Friday.",
    "I want to dispute a direct debit that I never authorised.",
    "Can my child under 18 open an account with you?",
    "urgent!!! money disappeared from my account last night, nobody answers the phone",
    "Ticket #4521: customer reports that the disposable virtual card was declined at checkout "
    "even though the balance was sufficient and the merchant accepts Mastercard; "
    "they tried three times over two days, cleared the browser cache, and re-entered the "
    "CVV each time, and now they are worried the account has been frozen for fraud.",
]


@dataclass(frozen=True)
class ExportSettings:
    """How a model is exported. Part of the encoder's identity."""

    quantize: str = "int8"  # int8 | none
    optimize: str | None = None  # O1 | O2 | O3 | O4 | None
    per_channel: bool = True  # per_tensor only: per-row int8 always scales weights per column
    # int8 activation scales: per_row (one per token, knnclass's rewrite, see _rowwise)
    # or per_tensor (onnxruntime's dynamic quantisation: one per batch).
    activations: str = "per_row"
    # MatMuls left in fp32 (see KEEP_FP32). With per-tensor scales the FFN output
    # projections' GELU outliers coarsen the whole batch; per-row scales need none kept.
    keep_fp32: str = "none"
    target: str = "auto"  # auto | avx512_vnni | avx2 | arm64
    cuda: bool = False  # also write an fp16 graph for onnxruntime's CUDA provider
    # per-row int8: also write the graph on knnclass's fused ops (run where they are built)
    fused: bool = True
    min_cosine: float = 0.98
    mean_cosine: float = 0.995
    max_knn_drop_pt: float = 0.3


# Which MatMuls stay fp32.
KEEP_FP32 = {
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
        if target not in ("avx512_vnni", "avx2", "arm64"):
            raise InputError(f"--target must be auto, avx512_vnni, avx2 or arm64, not {target!r}")
        return target
    import platform

    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "avx512_vnni" if ("avx512_vnni" in flags or "avx512vnni" in flags) else "avx2"


def _require_train() -> None:
    try:
        import optimum.onnxruntime  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError as e:
        raise DependencyError(
            f"exporting a model to ONNX needs the train extra ({e.name} is missing): pip install 'knnclass[train]'"
        ) from None


def st_config(src: Path) -> dict[str, Any]:
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


def _file_hash(*paths: Path, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in paths:
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _export_onnx(src: Path, work: Path, settings: ExportSettings) -> Path:
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
            raise InputError(f"--optimize must be O1, O2, O3 or O4, not {settings.optimize!r}")
        opt_dir = work / "opt"
        cfg = getattr(AutoOptimizationConfig, level)()
        ORTOptimizer.from_pretrained(model).optimize(save_dir=str(opt_dir), optimization_config=cfg)
        onnx_path = opt_dir / "model_optimized.onnx"
    if settings.quantize == "int8":
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        out = work / "model_int8.onnx"
        keep = KEEP_FP32.get(settings.keep_fp32)
        if keep is None:
            raise InputError(f"keep_fp32 must be one of {', '.join(KEEP_FP32)}, not {settings.keep_fp32!r}")
        # Without VNNI, u8 x s8 products can saturate the 16-bit accumulators: use 7 bits.
        seven_bit = resolve_target(settings.target) == "avx2"
        if settings.activations == "per_row":
            from ._rowwise import quantize_rows

            weight_max = 63 if seven_bit else 127
            quantize_rows(onnx_path, out, keep, weight_max)
            if settings.fused and fused_ops_library() is not None:
                quantize_rows(onnx_path, work / FUSED_MODEL_FILE, keep, weight_max, fused=True)
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
            reduce_range=seven_bit,
            op_types_to_quantize=["MatMul", "Gemm", "Attention"],
            nodes_to_exclude=exclude,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return out
    if settings.quantize != "none":
        raise InputError(f"--quantize must be int8 or none, not {settings.quantize!r}")
    return onnx_path


def _write_fp16(fp32_model: Path, dst: Path) -> None:
    """The fp32 graph in fp16 (inputs and output keep their types), for the CUDA provider."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(fp32_model)), keep_io_types=True), str(dst))


def knn_accuracy(encoder: OnnxEncoder, data_dir: Path, k: int = 3) -> float:
    """Banking77-style kNN accuracy (train -> test, majority of k, cosine) of an encoder."""
    from ..data import read_examples
    from ..voting import vote_batch

    train = read_examples(data_dir / "train.csv")
    test = read_examples(data_dir / "test.csv")
    labels = sorted({e.label for e in train})
    code = {lab: i for i, lab in enumerate(labels)}
    a = encoder.embed([e.text for e in train])
    b = encoder.embed([e.text for e in test])
    sims = b @ a.T
    top = np.argsort(-sims, axis=1)[:, :k]
    codes = np.array([[code[train[j].label] for j in row] for row in top])
    winner, _, _, _ = vote_batch(codes, np.take_along_axis(sims, top, axis=1), k, "majority", len(labels))
    return float(np.mean([w >= 0 and labels[w] == e.label for w, e in zip(winner, test, strict=True)]))


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
        raise InputError(f"--out {out}: is a file")
    if out.is_dir() and any(out.iterdir()) and not (out / METADATA_FILE).is_file():
        raise InputError(
            f"--out {out}: a non-empty directory that is not a knnclass encoder; "
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

        model_file = _export_onnx(src, work / "build", settings)
        final = work / "encoder"
        final.mkdir()
        shutil.copy2(model_file, final / "model.onnx")
        fused = (work / "build" / FUSED_MODEL_FILE).is_file()
        if fused:
            shutil.copy2(work / "build" / FUSED_MODEL_FILE, final / FUSED_MODEL_FILE)
        if settings.cuda:
            _write_fp16(work / "build" / "fp32" / "model.onnx", final / CUDA_MODEL_FILE)
        tok = AutoTokenizer.from_pretrained(str(src))
        tok.save_pretrained(str(final))
        if not (final / "tokenizer.json").exists():
            raise ExportError(f"{src}: the model has no fast tokenizer (tokenizer.json); knnclass needs one")
        st = SentenceTransformer(str(src), device="cpu")
        get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        dim = int(get_dim() or 0)
        identity = _file_hash(
            final / "model.onnx",
            final / "tokenizer.json",
            extra=json.dumps(cfg, sort_keys=True),
        )
        meta: dict[str, Any] = {
            "format": 1,
            "identity": f"{name}-{settings.quantize}-{identity}",
            "source_model": name,
            "source_fingerprint": source_fingerprint(src),
            "model_file": "model.onnx",
            "dim": dim,
            "pad_id": int(tok.pad_token_id or 0),
            "export": {**asdict(settings), "target": resolve_target(settings.target)},
            **cfg,
        }
        if settings.cuda:
            meta["cuda_model_file"] = CUDA_MODEL_FILE
        if fused:  # not part of the identity: the same arithmetic as model.onnx
            from ._rowwise import FUSED_OPS_VERSION

            meta.update(fused_model_file=FUSED_MODEL_FILE, fused_ops_version=FUSED_OPS_VERSION)
        (final / METADATA_FILE).write_text(json.dumps(meta, indent=2))
        reference = st.encode(PARITY_SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
        parity: dict[str, Any] = {"n_sentences": len(PARITY_SENTENCES)}
        graphs = {
            "": "model.onnx",
            **({"fused_": FUSED_MODEL_FILE} if fused else {}),
            **({"cuda_fp16_": CUDA_MODEL_FILE} if settings.cuda else {}),
        }

        def failed(prefix: str, graph: str, message: str) -> None:
            """A graph missed the gate: fatal, but for the fused graph (dropped: model.onnx serves)."""
            if prefix != "fused_":
                raise ExportError(f"export of {name} failed the parity gate ({graph}): {message}")
            del graphs[prefix]
            (final / graph).unlink()
            for key in ("fused_model_file", "fused_ops_version"):
                meta.pop(key, None)
            meta["fused_rejected"] = message

        for prefix, graph in list(graphs.items()):
            try:
                got = OnnxEncoder(final, graph=graph).embed(PARITY_SENTENCES)
            except EncoderError as e:
                if prefix != "fused_":
                    raise
                failed(prefix, graph, f"does not load: {e}")
                continue
            cos = np.sum(reference * got, axis=1) / np.linalg.norm(reference, axis=1)
            lo, mean = round(float(cos.min()), 5), round(float(cos.mean()), 5)
            parity.update({f"{prefix}cosine_min": lo, f"{prefix}cosine_mean": mean})
            if lo < settings.min_cosine or mean < settings.mean_cosine:
                failed(
                    prefix,
                    graph,
                    f"cosine min {lo} (need >= {settings.min_cosine}), mean {mean} (need >= {settings.mean_cosine})",
                )
        meta["parity"] = parity
        if parity_data is not None and settings.quantize != "none":
            ref_dir = work / "fp32-encoder"
            shutil.copytree(final, ref_dir)
            shutil.copy2(work / "build" / "fp32" / "model.onnx", ref_dir / "model.onnx")
            (ref_dir / METADATA_FILE).write_text(json.dumps({**meta, "fused_model_file": None}))
            acc32 = knn_accuracy(OnnxEncoder(ref_dir), Path(parity_data))
            parity.update(knn_data=Path(parity_data).name, knn_accuracy_fp32=round(acc32, 5))
            for prefix, graph in list(graphs.items()):
                if prefix == "cuda_fp16_":  # fp16 is checked on the GPU it is for, not here
                    continue
                acc = knn_accuracy(OnnxEncoder(final, graph=graph), Path(parity_data))
                drop = round((acc32 - acc) * 100, 3)
                parity.update({f"{prefix}knn_accuracy": round(acc, 5), f"{prefix}knn_drop_pt": drop})
                if drop > settings.max_knn_drop_pt:
                    failed(
                        prefix,
                        graph,
                        f"kNN accuracy {acc:.4f} is {drop} points below fp32 ({acc32:.4f}); "
                        f"allowed {settings.max_knn_drop_pt}",
                    )
        meta["export_seconds"] = round(time.perf_counter() - t0, 1)
        (final / METADATA_FILE).write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(final, out)
        return meta
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_best(
    src: str | Path, out: str | Path, settings: ExportSettings, name: str | None = None, parity_data: Path | None = None
) -> dict[str, Any]:
    """The fastest int8 variant that passes the parity gate (or fp32 with --quantize none)."""
    from dataclasses import replace

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
        Path(out, METADATA_FILE).write_text(json.dumps(meta, indent=2))
        return meta
    raise ExportError("no int8 variant passed the parity gate (use --quantize none): " + "; ".join(failures))
