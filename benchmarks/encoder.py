"""Encoder speed and fidelity, one run, same Banking77 texts: sentence-transformers on
torch vs every ONNX variant (fp32, int8 with per-tensor and with per-row activation scales;
the default per-row graph both on stock onnxruntime ops and on knnclass's fused ops).

Reports bulk texts/s, single-text p50/p99, cosine to torch (min/mean), kNN accuracy
(train -> test, k=3) and how far a text embedded alone is from the same text embedded in
a batch (min cosine). Writes benchmarks/results/encoder.{json,md}.

    python benchmarks/encoder.py [--bulk 3000] [--single 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, banking_rows, pct, save


def timings(variants: dict[str, Any], texts: list[str], single: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """Interleaved rounds (each variant once per round), medians: fair under drifting load."""
    bulk: dict[str, list[float]] = {k: [] for k in variants}
    lat: dict[str, list[float]] = {k: [] for k in variants}
    for embed in variants.values():
        embed(texts[:64])
    for _ in range(rounds):
        for name, embed in variants.items():
            t0 = time.perf_counter()
            embed(texts)
            bulk[name].append(len(texts) / (time.perf_counter() - t0))
            for t in single:
                a = time.perf_counter()
                embed([t])
                lat[name].append(time.perf_counter() - a)
    return {
        k: {"texts_per_s": float(np.median(bulk[k])), "p50_ms": pct(lat[k], 50) * 1e3, "p99_ms": pct(lat[k], 99) * 1e3}
        for k in variants
    }


def knn(embed: Any) -> float:
    from knnclass.data import read_examples
    from knnclass.voting import vote_batch

    train, test = read_examples(DATA / "train.csv"), read_examples(DATA / "test.csv")
    labels = sorted({e.label for e in train})
    code = {lab: i for i, lab in enumerate(labels)}
    a = np.asarray(embed([e.text for e in train]), dtype=np.float32)
    b = np.asarray(embed([e.text for e in test]), dtype=np.float32)
    sims = b @ a.T
    top = np.argsort(-sims, axis=1)[:, :3]
    codes = np.array([[code[train[j].label] for j in row] for row in top])
    win, _, _, _ = vote_batch(codes, np.take_along_axis(sims, top, axis=1), 3, "majority", len(labels))
    return float(np.mean([w >= 0 and labels[w] == e.label for w, e in zip(win, test, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bulk", type=int, default=1000)
    ap.add_argument("--single", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from knnclass.encoders import OnnxEncoder, default_model_dir
    from knnclass.encoders.export import ExportSettings, export_encoder

    rows = banking_rows()
    texts = [r["text"] for r in rows[: args.bulk]]
    single = [r["text"] for r in rows[-args.single :]]
    work = Path(tempfile.mkdtemp(prefix="knnclass-enc-bench-"))
    st = SentenceTransformer(str(default_model_dir()), device="cpu")

    def st_embed(x: list[str]) -> np.ndarray:
        return np.asarray(st.encode(x, batch_size=32, normalize_embeddings=True))

    reference = st_embed(texts)
    variants: dict[str, Any] = {"sentence-transformers (torch)": st_embed}
    base = ExportSettings()
    for label, settings in [
        ("ONNX fp32", replace(base, quantize="none")),
        (
            "ONNX int8 per-tensor, FFN + attention out fp32 (previous default)",
            replace(base, activations="per_tensor", keep_fp32="ffn_out+att_out"),
        ),
        ("ONNX int8 per-row, FFN out fp32", replace(base, keep_fp32="ffn_out")),
        ("ONNX int8 per-row, all MatMuls, knnclass fused ops (default)", base),
    ]:
        out = work / "".join(c if c.isalnum() else "_" for c in label.split(" (")[0])
        export_encoder(
            default_model_dir(), out, replace(settings, min_cosine=0.0, mean_cosine=0.0), name="all-MiniLM-L6-v2"
        )
        if settings == base:  # the same export's graph on stock onnxruntime ops, for comparison
            variants["ONNX int8 per-row, all MatMuls, stock onnxruntime ops"] = OnnxEncoder(
                out, graph="model.onnx"
            ).embed
        encoder = OnnxEncoder(out)
        if settings == base and encoder.graph != "model_fused.onnx":
            raise SystemExit("the default encoder is not running knnclass's fused ops: is the extension built?")
        variants[label] = encoder.embed
    res: dict[str, Any] = {
        "command": "python benchmarks/encoder.py " + " ".join(sys.argv[1:]),
        "cpu_count": os.cpu_count(),
        "variants": {},
    }
    times = timings(variants, texts, single, args.rounds)
    for label, embed in variants.items():
        m = times[label]
        got = np.asarray(embed(texts), dtype=np.float32)
        cos = np.sum(got * reference, axis=1)
        alone = np.stack([np.asarray(embed([t]), dtype=np.float32)[0] for t in texts[:100]])
        m.update(
            cosine_min=float(cos.min()),
            cosine_mean=float(cos.mean()),
            knn_accuracy=knn(embed),
            alone_vs_batch_min=float(np.min(np.sum(alone * got[:100], axis=1))),
        )
        res["variants"][label] = m
        print(label, json.dumps(m), flush=True)
    torch_tps = res["variants"]["sentence-transformers (torch)"]["texts_per_s"]
    fp32_acc = res["variants"]["ONNX fp32"]["knn_accuracy"]
    lines = [
        f"Command: `{res['command']}`; {args.bulk} Banking77 texts for bulk, {args.single} single-text calls; "
        f"{os.cpu_count()} cores, all in one run.",
        "",
        "| encoder | texts/s (bulk) | × torch | single p50 ms | single p99 ms | cosine min / mean vs torch "
        "| kNN acc (k=3) | Δ vs fp32 (pt) | alone vs in batch (min cos) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, m in res["variants"].items():
        lines.append(
            f"| {label} | {m['texts_per_s']:.0f} | {m['texts_per_s'] / torch_tps:.2f}× | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
            f"{m['cosine_min']:.4f} / {m['cosine_mean']:.4f} | {m['knn_accuracy']:.4f} | {(m['knn_accuracy'] - fp32_acc) * 100:+.2f} "
            f"| {m['alone_vs_batch_min']:.5f} |"
        )
    lines += [
        "",
        "Goal for the default CPU encoder: ≥ 3.5× torch and ≥ 1,000 texts/s, single p50 ≤ 3 ms, kNN accuracy loss ≤ 0.3 pt.",
    ]
    save("encoder", res, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
