"""One NVIDIA GPU: the encoder on CUDA and the fine-tuning step, each against the CPU in the same run.

    HF_HUB_OFFLINE=1 python benchmarks/gpu.py [--texts 10000] [--steps 30]

Encoder: sentence-transformers (torch) fp32 and fp16 on the GPU, knnclass's int8 ONNX encoder and
torch fp32 on the same machine's CPU cores: bulk throughput (Banking77 texts, as in
benchmarks/encoder.py), one-ticket latency, and fp16's parity with fp32 (cosine of the same
text's vectors, nearest-neighbour agreement over the bulk set). ONNX Runtime's CUDA provider
(`knnclass export --cuda`, `--device cuda`) is measured where the installed onnxruntime offers it;
otherwise the run says so. Fine-tuning: milliseconds per optimiser step of full tuning (the
cosine-head loss of `--strategy full`, batch 32, 64 tokens) on the GPU and on all CPU cores.
Writes benchmarks/results/gpu.{json,md}; benchmarks/finetune.py --device cuda times whole runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import banking_rows, pct, save


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _bulk(embed: Any, texts: list[str]) -> tuple[np.ndarray, float]:
    """Vectors of `texts` and texts per second (after a warm-up on the first 256)."""
    embed(texts[:256])
    _sync()
    t0 = time.perf_counter()
    v = np.asarray(embed(texts), dtype=np.float32)
    _sync()
    return v, len(texts) / (time.perf_counter() - t0)


def _single(embed: Any, texts: list[str]) -> dict[str, float]:
    """p50 / p99 ms of one text per call."""
    for t in texts[:20]:
        embed([t])
    lat = []
    for t in texts:
        t0 = time.perf_counter()
        embed([t])
        _sync()
        lat.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(pct(lat, 50), 3), "p99_ms": round(pct(lat, 99), 3)}


def _neighbour_agreement(a: np.ndarray, b: np.ndarray, n: int = 2000) -> float:
    """Share of the first `n` rows whose nearest other row is the same under `a` and `b`."""
    sa, sb = a[:n] @ a.T, b[:n] @ b.T
    idx = np.arange(min(n, len(a)))
    sa[idx, idx] = sb[idx, idx] = -2.0
    return float(np.mean(sa.argmax(1) == sb.argmax(1)))


def encoder_figures(texts: list[str], n_single: int, n_cpu: int) -> dict[str, Any]:
    import onnxruntime as ort
    import torch
    from sentence_transformers import SentenceTransformer

    from knnclass.encoders import default_model_dir, load_encoder

    res: dict[str, Any] = {"texts": len(texts), "cpu_texts": n_cpu, "single_calls": n_single}
    src = str(default_model_dir())

    def st_embed(model: Any, batch: int) -> Any:
        return lambda ts: model.encode(
            ts, batch_size=batch, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )

    rows: dict[str, dict[str, Any]] = {}
    torch.set_num_threads(os.cpu_count() or 1)
    cpu = SentenceTransformer(src, device="cpu")
    _, tps = _bulk(st_embed(cpu, 64), texts[:n_cpu])
    rows["torch fp32, CPU"] = {"texts_per_s": round(tps, 1), **_single(st_embed(cpu, 1), texts[:n_single])}
    del cpu
    enc = load_encoder(None, device="cpu")  # the product's CPU path: int8 ONNX (exported once, cached)
    _, tps = _bulk(enc.embed, texts[:n_cpu])
    rows["knnclass int8 ONNX, CPU"] = {"texts_per_s": round(tps, 1), **_single(enc.embed, texts[:n_single])}
    gpu = SentenceTransformer(src, device="cuda")
    v32, tps = _bulk(st_embed(gpu, 256), texts)
    rows["torch fp32, GPU"] = {"texts_per_s": round(tps, 1), **_single(st_embed(gpu, 1), texts[:n_single])}
    gpu.half()
    v16, tps = _bulk(st_embed(gpu, 256), texts)
    rows["torch fp16, GPU"] = {"texts_per_s": round(tps, 1), **_single(st_embed(gpu, 1), texts[:n_single])}
    cos = np.sum(v16 * v32, axis=1)
    res["fp16_parity"] = {
        "cosine_min": round(float(cos.min()), 6),
        "cosine_mean": round(float(cos.mean()), 6),
        "neighbour_agreement": round(_neighbour_agreement(v16, v32), 4),
    }
    providers = ort.get_available_providers()
    res["onnxruntime"] = {"version": ort.__version__, "providers": providers}
    if "CUDAExecutionProvider" in providers:
        cuda = load_encoder(None, device="cuda")
        vc, tps = _bulk(cuda.embed, texts)
        rows["knnclass fp16 ONNX, CUDA provider"] = {
            "texts_per_s": round(tps, 1),
            **_single(cuda.embed, texts[:n_single]),
        }
        c = np.sum(vc * v32, axis=1)
        res["onnx_cuda_parity"] = {"cosine_min": round(float(c.min()), 6), "cosine_mean": round(float(c.mean()), 6)}
    base = rows["torch fp32, CPU"]["texts_per_s"]
    for r in rows.values():
        r["x_torch_cpu"] = round(r["texts_per_s"] / base, 2)
    res["rows"] = rows
    return res


def step_figures(texts: list[str], labels: list[str], steps: int) -> dict[str, Any]:
    """ms per optimiser step of full tuning (cosine-head loss), GPU and CPU, same batches."""
    import torch
    from sentence_transformers import SentenceTransformer

    from knnclass.encoders import default_model_dir
    from knnclass.jobs.losses import CosineHeadLoss

    names = sorted(set(labels))
    codes = np.array([names.index(x) for x in labels])
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(texts), 32, replace=False) for _ in range(steps + 3)]
    out: dict[str, Any] = {"steps": steps, "batch_size": 32, "max_seq_length": 64}
    for device in ("cuda", "cpu"):
        torch.manual_seed(0)
        model = SentenceTransformer(str(default_model_dir()), device=device)
        model.max_seq_length = 64
        init = {"label": rng.standard_normal((len(names), 384)).astype(np.float32)}
        loss = CosineHeadLoss(model, init, 20.0, 0.0).to(device)
        opt = torch.optim.AdamW(loss.parameters(), lr=5e-5)
        model.train()
        times = []
        for i, b in enumerate(batches):
            feats = model.preprocess([texts[j] for j in b])
            feats = {k: v.to(device) if hasattr(v, "to") else v for k, v in feats.items()}
            y = torch.tensor(codes[b], device=device).unsqueeze(1)
            _sync()
            t0 = time.perf_counter()
            value = loss([feats], y)
            value.backward()
            opt.step()
            opt.zero_grad()
            _sync()
            if i >= 3:  # the first steps allocate and autotune
                times.append((time.perf_counter() - t0) * 1000)
        out[device] = {"ms_per_step_p50": round(pct(times, 50), 2), "ms_per_step_mean": round(float(np.mean(times)), 2)}
        del model, loss, opt
    out["cpu_over_gpu"] = round(out["cpu"]["ms_per_step_mean"] / out["cuda"]["ms_per_step_mean"], 1)
    return out


def table(res: dict[str, Any]) -> str:
    e, s = res["encoder"], res["steps"]
    lines = [
        "## One GPU: encoder and fine-tuning step",
        "",
        f"Command: `python benchmarks/gpu.py {' '.join(res['argv'])}` on one {res['machine']['gpu']} "
        f"({res['machine']['cpus']} CPU cores; torch {res['machine']['torch']}). Bulk: {e['texts']:,} Banking77 "
        f"texts on the GPU, {e['cpu_texts']:,} on the CPU (all cores); one ticket per call: {e['single_calls']} calls.",
        "",
        "| encoder | texts/s | × torch fp32 CPU | one ticket p50 / p99 ms |",
        "| --- | --- | --- | --- |",
        *(
            f"| {k} | {r['texts_per_s']:,.0f} | {r['x_torch_cpu']}× | {r['p50_ms']} / {r['p99_ms']} |"
            for k, r in e["rows"].items()
        ),
        "",
        f"fp16 against fp32 on the GPU: cosine min {e['fp16_parity']['cosine_min']}, mean "
        f"{e['fp16_parity']['cosine_mean']}; nearest-neighbour agreement {e['fp16_parity']['neighbour_agreement']:.2%}. "
        f"onnxruntime {e['onnxruntime']['version']} providers: {', '.join(e['onnxruntime']['providers'])}.",
        "",
        f"Full tuning step (batch {s['batch_size']}, {s['max_seq_length']} tokens, mean of {s['steps']}): GPU "
        f"{s['cuda']['ms_per_step_mean']} ms, CPU {s['cpu']['ms_per_step_mean']} ms ({s['cpu_over_gpu']}× the GPU).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--texts", type=int, default=10_000)
    ap.add_argument("--cpu-texts", type=int, default=2_000)
    ap.add_argument("--single", type=int, default=300)
    ap.add_argument("--steps", type=int, default=30)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu.py needs a CUDA device")
    rows = banking_rows()
    texts = [r["text"] for r in rows][: a.texts]
    res: dict[str, Any] = {
        "argv": sys.argv[1:],
        "machine": {
            "gpu": torch.cuda.get_device_name(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
    }
    res["steps"] = step_figures([r["text"] for r in rows], [r["category"] for r in rows], a.steps)
    print(res["steps"], flush=True)
    res["encoder"] = encoder_figures(texts, a.single, a.cpu_texts)
    save("gpu", res, table(res))
    print(table(res))


if __name__ == "__main__":
    main()
