"""Inference through onnxruntime + tokenizers only: no torch, no sentence-transformers."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .._cpu import encoder_threads
from ..errors import DependencyError, EncoderError, InputError
from .base import check_long, chunk_spans, head_tail
from .metadata import METADATA_FILE, read_metadata

__all__ = [
    "CUDA_MODEL_FILE",
    "FUSED_MODEL_FILE",
    "METADATA_FILE",
    "OnnxEncoder",
    "built_ops_library",
    "cpu_graph",
    "fused_ops_library",
    "fused_ops_version",
    "read_metadata",
    "select_providers",
]

CUDA_MODEL_FILE = "model_fp16.onnx"  # written by `knnclass export --cuda`
FUSED_MODEL_FILE = "model_fused.onnx"  # the int8 graph on knnclass's fused ops (_fusedops.c)
# A lone batch with at least this many token slots (rows x width) runs on every thread:
# one 342-token text takes 18 ms on 2 threads vs 29 ms on 1; a short ticket gains nothing.
WIDE_TOKENS = 128


REBUILD_HINT = "rebuild them with `bash scripts/setup.sh` or `pip install -e .`"


def built_ops_library() -> Path | None:
    """The compiled fused-ops library beside this module, whatever its version (None: not built)."""
    from importlib.machinery import EXTENSION_SUFFIXES

    here = Path(__file__).parent
    return next((here / f"_fusedops{s}" for s in EXTENSION_SUFFIXES if (here / f"_fusedops{s}").is_file()), None)


def fused_ops_version(library: Path) -> int | None:
    """The ops version a built library reports (knnclass_fusedops_version()); None where it
    reports none (built before the library exported its version) or does not load."""
    import ctypes

    try:
        lib = ctypes.CDLL(str(library))
        get = lib.knnclass_fusedops_version
    except (OSError, AttributeError):
        return None
    get.restype, get.argtypes = ctypes.c_int, []
    return int(get())


@functools.lru_cache(maxsize=8)
def _checked_library(library: Path, mtime_ns: int, expected: int) -> bool:
    """Whether `library` (as of `mtime_ns`) is the ops version `expected`; warns once where not."""
    found = fused_ops_version(library)
    if found == expected:
        return True
    logging.getLogger(__name__).warning(
        "%s: stale build of knnclass's fused ops (version %s, this knnclass needs %d); running the "
        "stock onnxruntime graphs instead (slower): %s",
        library,
        "unknown" if found is None else found,
        expected,
        REBUILD_HINT,
    )
    return False


def fused_ops_library() -> Path | None:
    """knnclass's compiled onnxruntime ops, or None where setup.py could not build them or
    they are a stale build (their version is not FUSED_OPS_VERSION: a warning says to rebuild).

    KNNCLASS_FUSED_OPS=0 turns them off (the stock-op graph runs instead).
    """
    from ..settings import env

    if (env("FUSED_OPS") or "1").strip() == "0":
        return None
    from . import _rowwise

    library = built_ops_library()
    if library is None:
        return None
    try:
        mtime_ns = library.stat().st_mtime_ns
    except OSError:
        return None
    return library if _checked_library(library, mtime_ns, _rowwise.FUSED_OPS_VERSION) else None


def cpu_graph(meta: dict[str, Any]) -> str:
    """The graph an encoder with this metadata runs on CPU: the fused one where the ops are
    built and are the version it was exported for."""
    from ._rowwise import FUSED_OPS_VERSION

    fused = meta.get("fused_model_file")
    current = meta.get("fused_ops_version") == FUSED_OPS_VERSION
    return str(fused) if fused and current and fused_ops_library() is not None else str(meta["model_file"])


def select_providers(device: str, available: Sequence[str]) -> list[str]:
    """Execution providers for `device` ('cpu', 'cuda' or 'auto') given what ORT offers."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise DependencyError(
                "device cuda needs onnxruntime-gpu with a CUDA device: "
                "pip uninstall onnxruntime && pip install onnxruntime-gpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return select_providers("cuda" if "CUDAExecutionProvider" in available else "cpu", available)
    raise InputError(f"device must be cpu, cuda or auto, not {device!r}")


class OnnxEncoder:
    """Sentence embeddings from an exported knnclass encoder dir."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "cpu",
        threads: int | None = None,
        batch_size: int = 16,
        *,
        graph: str | None = None,
    ):
        """`graph` names another ONNX file of the dir to run (the export checks the fp16 graph on the CPU)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self._dir = Path(model_dir).resolve()
        self.meta = read_metadata(self._dir)
        self._batch_size = batch_size
        self._threads = threads or encoder_threads()
        self._model_file: Path = self._dir / str(self.meta["model_file"])
        providers = select_providers(device, ort.get_available_providers())
        if providers[0] == "CUDAExecutionProvider":
            if not self.meta.get("cuda_model_file"):
                raise EncoderError(
                    f"{self._dir}: no fp16 graph for device cuda (its int8 graph would run on the CPU); "
                    "re-export it with its fp16 CUDA graph (the cuda export setting)"
                )
            self._model_file = self._dir / self.meta["cuda_model_file"]
        # CPU: the graph on knnclass's fused ops where the export wrote one and they are built.
        self._ops_library: Path | None = None
        fused = self.meta.get("fused_model_file")
        if graph is None and providers[0] == "CPUExecutionProvider" and cpu_graph(self.meta) == fused:
            self._ops_library = fused_ops_library()
            self._model_file = self._dir / fused
        if graph is not None:
            self._model_file = self._dir / graph
            if graph == fused:
                self._ops_library = fused_ops_library()
                if self._ops_library is None:
                    raise EncoderError(f"{self._dir / graph} needs knnclass's compiled ops, which are not built here")
        # CPU: `_session` runs on one thread (no intra-op barriers: steadier tails under
        # concurrent requests); calls of several batches spread them over `threads` workers,
        # and one large batch goes to a `threads`-wide session made on first use.
        self._spread = providers[0] == "CPUExecutionProvider" and self._threads >= 2
        self._pool: ThreadPoolExecutor | None = None
        self._wide: Any = None
        self._lazy_lock = threading.Lock()
        try:
            try:
                self._session = self._new_session(1 if self._spread else self._threads, providers)
            except Exception as e:
                if self._ops_library is None or graph is not None:
                    raise
                # e.g. an onnxruntime too old for the ops' API level: run the stock graph
                logging.getLogger(__name__).warning(
                    "%s: fused ops unusable (%s); running %s", self._dir, e, self.meta["model_file"]
                )
                self._ops_library, self._model_file = None, self._dir / self.meta["model_file"]
                self._session = self._new_session(1 if self._spread else self._threads, providers)
            if not self._spread:
                self._wide = self._session
            tok = Tokenizer.from_file(str(self._dir / "tokenizer.json"))
        except Exception as e:  # onnxruntime and tokenizers raise plain exceptions
            raise EncoderError(f"{self._dir}: cannot load encoder: {e}") from None
        tok.no_padding()
        tok.no_truncation()
        self._tok = tok
        # special tokens around the content ([CLS] ... [SEP] for BERT): kept by head_tail and chunk
        mask = tok.encode("a").special_tokens_mask
        plain = [i for i, m in enumerate(mask) if not m]
        self._specials = (plain[0], len(mask) - 1 - plain[-1]) if plain else (0, 0)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._output = self._session.get_outputs()[0].name
        self._pad_id = int(self.meta.get("pad_id", 0))
        self.providers = providers

    def _new_session(self, threads: int, providers: list[str]) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        if self._ops_library is not None:
            opts.register_custom_ops_library(str(self._ops_library))
        return ort.InferenceSession(str(self._model_file), sess_options=opts, providers=providers)

    def _workers(self) -> ThreadPoolExecutor | None:
        """One worker per thread for calls of several batches (None: run them in turn)."""
        if not self._spread:
            return None
        with self._lazy_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="knnclass-embed")
            return self._pool

    def _session_for(self, rows: int, width: int) -> Any:
        """The session for one batch: all threads only where the batch is large enough to gain."""
        if rows * width < WIDE_TOKENS:
            return self._session
        with self._lazy_lock:
            if self._wide is None:
                self._wide = self._new_session(self._threads, self.providers)
            return self._wide

    @property
    def graph(self) -> str:
        """The ONNX file this encoder runs (model.onnx, or the fused / fp16 graph)."""
        return self._model_file.name

    @property
    def identity(self) -> str:
        return str(self.meta["identity"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def max_tokens(self) -> int:
        return int(self.meta["max_tokens"])

    @property
    def source(self) -> str:
        return str(self._dir)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._tok.encode_batch(list(texts))]

    def _run(self, ids: list[list[int]], session: Any = None) -> np.ndarray:
        width = max(len(x) for x in ids)
        session = session or self._session_for(len(ids), width)
        input_ids = np.full((len(ids), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = x
            mask[i, : len(x)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        hidden: np.ndarray = session.run([self._output], feed)[0]
        if hidden.ndim == 2:  # graph already pools
            pooled = hidden.astype(np.float32)
        elif self.meta["pooling"] == "cls":
            pooled = hidden[:, 0, :].astype(np.float32)
        else:
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: np.ndarray = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return vectors

    def embed(self, texts: Sequence[str], long: str = "head") -> np.ndarray:
        """(len(texts), dim) L2-normalised vectors; `long` (LONG_TEXT_STRATEGIES) says what
        becomes of a text past max_tokens. Within the limit every strategy gives the same vector."""
        check_long(long)
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        limit = self.max_tokens
        encs = self._tok.encode_batch(list(texts))
        if long == "head":
            ids = []
            for e in encs:
                x = e.ids
                if len(x) > limit:  # keep the final [SEP]-like token, as HF truncation does
                    x = x[: limit - 1] + x[-1:]
                ids.append(x)
            return self._embed_ids(ids)
        front, back = self._specials
        budget = max(1, limit - front - back)  # content tokens a row has room for
        if long == "head_tail":  # [CLS] + the content's start and end + [SEP]: exactly `limit` tokens
            ids = []
            for e in encs:
                x = e.ids
                if len(x) > limit:
                    x = x[:front] + head_tail(x[front : len(x) - back], budget) + x[len(x) - back :]
                ids.append(x)
            return self._embed_ids(ids)
        # chunk: each window of the content wrapped as [CLS] ... [SEP], all of them through one
        # batched run, then a token-weighted mean per text
        windows: list[list[int]] = []
        spans: list[tuple[int, int]] = []  # per text: its windows' rows
        weights: list[int] = []
        for e in encs:
            x = e.ids
            first = len(windows)
            if len(x) <= limit:
                windows.append(x)
                weights.append(len(x))
            else:
                head, content, tail = x[:front], x[front : len(x) - back], x[len(x) - back :]
                for a, b in chunk_spans(len(content), budget):
                    windows.append(head + content[a:b] + tail)
                    weights.append(b - a)
            spans.append((first, len(windows)))
        vecs = self._embed_ids(windows)
        if len(windows) == len(encs):
            return vecs
        out = np.empty((len(encs), self.dim), dtype=np.float32)
        w = np.asarray(weights, dtype=np.float64)
        for i, (a, b) in enumerate(spans):
            if b - a == 1:
                out[i] = vecs[a]  # within the limit: bitwise the "head" vector
                continue
            mean = (w[a:b, None] * vecs[a:b]).sum(axis=0) / w[a:b].sum()
            out[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return out

    def _embed_ids(self, ids: list[list[int]]) -> np.ndarray:
        """Vectors of token-id rows, in order, each row at most max_tokens long."""
        # Length-bucketed batches: sort by length so each batch pads little.
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        bs = self._batch_size
        batches = [order[start : start + bs] for start in range(0, len(order), bs)]
        pool = self._workers() if len(batches) > 1 else None
        if pool is None:
            for idx in batches:
                out[idx] = self._run([ids[i] for i in idx])
            return out
        # Small GEMMs scale poorly across threads: one single-threaded run per core on
        # different batches is faster in bulk than every core on each batch in turn
        # (onnxruntime releases the GIL while it runs).
        runs = pool.map(lambda b: self._run([ids[i] for i in b], self._session), batches)
        for idx, vecs in zip(batches, runs, strict=True):
            out[idx] = vecs
        return out
