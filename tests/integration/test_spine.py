"""End to end with the real encoder (int8 ONNX MiniLM) and real Qdrant Edge, on a slice."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from knnclass.cli import cli

CLASSES = 12


def _slice(src: Path, dst: Path, per_class: int) -> Path:
    rows = list(csv.DictReader(src.open()))
    keep = sorted({r["category"] for r in rows})[:CLASSES]
    out, seen = [], dict.fromkeys(keep, 0)
    for r in rows:
        c = r["category"]
        if c in seen and seen[c] < per_class:
            out.append(r)
            seen[c] += 1
    with dst.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows(out)
    return dst


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("slice")
    return _slice(data_dir / "train.csv", d / "train.csv", 40), _slice(data_dir / "test.csv", d / "test.csv", 10)


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_index_tune_evaluate_classify_info(real_encoder, slices, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, test = slices
    store = str(tmp_path / "store")
    code, out, err = run("index", str(train), "--store", store)
    assert code == 0, err
    n = CLASSES * 40
    assert f"collection holds {n}" in out
    code, out, _ = run("index", str(train), "--store", store)  # idempotent
    assert f"collection holds {n}" in out

    code, out, err = run("tune", "--store", store, "--json")
    assert code == 0, err
    tuned = json.loads(out)
    assert tuned["mode"] == "leave-one-out" and tuned["n"] == n
    assert len(tuned["candidates"]) > 20
    assert tuned["best"]["score"] == max(c["score"] for c in tuned["candidates"])
    assert {c["vote"] for c in tuned["candidates"]} == {"majority", "weighted"}
    assert {c["size"] for c in tuned["candidates"]} == {"k", "pct"}

    code, out, err = run("evaluate", str(test), "--store", store, "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["n"] == CLASSES * 10
    assert m["accuracy"] >= 0.85, m["accuracy"]
    for key in ("macro_f1", "vote", "k", "threshold", "abstain_rate", "per_class"):
        assert key in m
    assert 0 <= m["abstain_rate"] <= 1 and 0 <= m["macro_f1"] <= 1
    some = next(iter(m["per_class"].values()))
    assert set(some) == {"precision", "recall", "f1", "support"}

    code, out, err = run("classify", "--store", store, "--json", "Please cancel the transfer I just made")
    assert code == 0, err
    pred = json.loads(out)["predictions"][0]
    assert pred["label"] == "cancel_transfer"
    assert pred["neighbours"] and {"id", "label", "score"} <= set(pred["neighbours"][0])

    out_csv = tmp_path / "pred.csv"
    code, out, err = run("classify", "--store", store, "--input", str(test), "--output", str(out_csv))
    assert code == 0, err
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == CLASSES * 10 and rows[0]["label"]

    code, out, err = run("info", "--store", store, "--json")
    info = json.loads(out)
    assert info["count"] == n and len(info["labels"]) == CLASSES
    assert info["encoder"] == real_encoder.identity
    assert info["encoder_graph"] == real_encoder.graph == "model_fused.onnx"
    code, out, _ = run("info", "--store", store)
    assert code == 0 and "graph      model_fused.onnx on CPU" in out
    best = tuned["best"]
    assert info["rule"] == {k: best[k] for k in ("vote", "size", "value", "threshold", "novelty", "blend")}


def test_urgency_label_map(real_encoder, slices, tmp_path: Path, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    train, test = slices
    store = str(tmp_path / "store")
    umap = str(data_dir / "urgency.csv")
    assert run("index", str(train), "--store", store, "--collection", "urgency", "--label-map", umap)[0] == 0
    assert run("tune", "--store", store, "--collection", "urgency")[0] == 0
    code, out, err = run(
        "evaluate", str(test), "--store", store, "--collection", "urgency", "--label-map", umap, "--json"
    )
    assert code == 0, err
    m = json.loads(out)
    assert set(m["per_class"]) <= {"urgent", "not_urgent"}
    assert m["accuracy"] > 0.9


def test_onnx_fp32_matches_sentence_transformers(encoder_cache: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from knnclass.encoders import OnnxEncoder, default_model_dir
    from knnclass.encoders.export import ExportSettings, export_encoder

    sentences = [r["text"] for r in csv.DictReader((Path(__file__).parents[2] / "data/banking77/test.csv").open())][
        :200
    ]
    export_encoder(default_model_dir(), tmp_path / "fp32", ExportSettings(quantize="none"))
    got = OnnxEncoder(tmp_path / "fp32").embed(sentences)
    ref = SentenceTransformer(str(default_model_dir()), device="cpu").encode(sentences, normalize_embeddings=True)
    cos = np.sum(got * ref, axis=1)
    assert cos.min() >= 0.999, cos.min()
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_serving_path_imports_no_torch(real_encoder, slices, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, _ = slices
    store = str(tmp_path / "store")
    assert run("index", str(train), "--store", store)[0] == 0
    assert run("tune", "--store", store)[0] == 0
    code = (
        "import sys\nfrom knnclass.cli import cli\n"
        f"try:\n    cli(['classify', '--store', {store!r}, '--json', 'card not working'])\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "bad = [m for m in ('torch', 'sentence_transformers', 'optimum', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\nprint('clean')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("clean")


def test_cli_sharded_index_equals_unsharded(real_encoder, slices, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from knnclass.store.edge import EdgeStore

    train, _ = slices
    one, four = str(tmp_path / "one"), str(tmp_path / "four")
    assert run("index", str(train), "--store", one)[0] == 0
    for i in (0, 2, 1, 3):
        code, out, err = run("index", str(train), "--store", four, "--shard", f"{i}/4")
        assert code == 0, err
        assert f"shard {i}/4" in out
    code, out, _ = run("index", str(train), "--store", four, "--shard", "1/4")
    assert "batches resumed from checkpoint" in out and " 0 batches resumed" not in out

    def dump(path: str) -> dict:
        st = EdgeStore(path)
        ref = st.ref("tickets")
        d = {
            e.id: (e.label, np.round(v, 5).tolist())
            for b, vs in st.scroll(ref, 256, with_vectors=True)
            for e, v in zip(b, vs, strict=True)
        }
        st.close()
        return d

    assert dump(one) == dump(four)
    code, _, err = run("index", str(train), "--store", four, "--shard", "4/4")
    assert code != 0 and "need 0 <= I < N" in err


def test_embed_cli_json(real_encoder, slices, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json as _json

    train, _ = slices
    out = tmp_path / "v.npy"
    code, stdout, err = run("embed", str(train), "--encoder", real_encoder.source, "--output", str(out), "--json")
    assert code == 0, err
    stats = _json.loads(stdout)
    assert stats["n"] == CLASSES * 40 and stats["seconds"] > 0 and stats["texts_per_s"] > 0
    v = np.load(out)
    assert v.shape == (CLASSES * 40, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    first = next(csv.DictReader(train.open()))["text"]
    assert float(v[0] @ real_encoder.embed([first])[0]) > 0.98  # input order kept
    # the file is written under the name given (np.save alone would add ".npy")
    code, _, err = run("embed", str(train), "--encoder", real_encoder.source, "--output", str(tmp_path / "v.bin"))
    assert code == 0 and np.load(tmp_path / "v.bin").shape == v.shape and not (tmp_path / "v.bin.npy").exists()
    # an output path that cannot be written: one line, no traceback
    code, _, err = run(
        "embed", str(train), "--encoder", real_encoder.source, "--output", str(tmp_path / "no" / "v.npy")
    )
    assert code == 1 and err.startswith("error: No such file or directory") and "Traceback" not in err


def test_bulk_workers_and_single_calls_give_the_batched_vectors(real_encoder, slices) -> None:  # type: ignore[no-untyped-def]
    from knnclass.encoders import OnnxEncoder

    texts = [r["text"] for r in csv.DictReader(slices[0].open())]
    one_thread = OnnxEncoder(real_encoder.source, threads=1).embed(texts)  # one batch after another
    workers = OnnxEncoder(real_encoder.source, threads=2)
    bulk = workers.embed(texts)  # batches side by side on the one-thread session
    assert np.abs(bulk - one_thread).max() < 1e-5
    # Per-row int8 scales: a text's vector does not depend on the batch it was embedded in.
    single = np.stack([workers.embed([t])[0] for t in texts[:40]])
    assert float(np.min(np.sum(single * bulk[:40], axis=1))) > 0.9999
    # A short lone ticket runs on the one-thread session, a long one on every thread.
    assert workers._session_for(1, 16) is workers._session
    wide = workers._session_for(1, 300)
    assert wide is not workers._session and workers._session_for(16, 16) is wide
    long_text = " ".join(texts[:12])
    assert float(workers.embed([long_text])[0] @ workers.embed([long_text, texts[0]])[0]) > 0.9999


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider':UserWarning")
def test_export_cuda_writes_a_gated_fp16_graph_that_cuda_selects(
    encoder_cache: Path, slices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    from knnclass.encoders import CUDA_MODEL_FILE, OnnxEncoder

    out = tmp_path / "enc"
    code, stdout, err = run("export", "--out", str(out), "--cuda", "--parity-data", str(slices[0].parent), "--json")
    assert code == 0, err
    meta = json.loads(stdout)
    assert meta["cuda_model_file"] == CUDA_MODEL_FILE and (out / CUDA_MODEL_FILE).stat().st_size > 0
    assert meta["parity"]["cuda_fp16_cosine_min"] >= 0.98 and meta["parity"]["cuda_fp16_cosine_mean"] >= 0.995
    texts = [r["text"] for r in csv.DictReader(slices[1].open())][:20]
    cpu = OnnxEncoder(out)
    assert cpu.providers == ["CPUExecutionProvider"] and cpu.graph == "model_fused.onnx"
    # Without a GPU, onnxruntime runs the CUDA choice on its CPU provider: the selection is what is tested.
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    gpu = OnnxEncoder(out, device="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider" and gpu.graph == CUDA_MODEL_FILE
    assert float(np.min(np.sum(gpu.embed(texts) * cpu.embed(texts), axis=1))) > 0.98
