"""Encoder plumbing that needs no model: providers, targets, fake encoder, metadata errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from knnclass.encoders import FakeEncoder, OnnxEncoder
from knnclass.encoders.onnx import select_providers
from knnclass.encoders.quantization import KEEP_FP32, resolve_target
from knnclass.errors import DependencyError, EncoderError, InputError


def test_cpu_is_the_default_and_cuda_is_chosen_only_when_available() -> None:
    assert select_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert select_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    assert select_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(DependencyError, match="onnxruntime-gpu"):
        select_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(InputError):
        select_providers("tpu", ["CPUExecutionProvider"])


def test_targets() -> None:
    for t in ("avx512_vnni", "avx2", "arm64"):
        assert resolve_target(t) == t
    assert resolve_target("auto") in ("avx512_vnni", "avx2", "arm64")
    with pytest.raises(InputError):
        resolve_target("sse2")


def test_keep_fp32_variants_select_the_right_matmuls() -> None:
    ffn = "/encoder/layer.3/output/dense/MatMul"
    att = "/encoder/layer.3/attention/output/dense/MatMul"
    q = "/encoder/layer.3/attention/self/query/MatMul"
    assert [KEEP_FP32["ffn_out"](n) for n in (ffn, att, q)] == [True, False, False]
    assert [KEEP_FP32["ffn_out+att_out"](n) for n in (ffn, att, q)] == [True, True, False]
    assert not any(KEEP_FP32["none"](n) for n in (ffn, att, q))


def test_fake_encoder_is_deterministic_and_normalised() -> None:
    enc = FakeEncoder(dim=16, topics=["card"])
    a, b = enc.embed(["my card", "other"]), enc.embed(["my card", "other"])
    assert np.array_equal(a, b) and np.allclose(np.linalg.norm(a, axis=1), 1)
    assert float(a[0] @ enc.embed(["card again"])[0]) > float(a[0] @ a[1])
    assert enc.embed([]).shape == (0, 16)


def test_not_an_encoder_dir(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="not a knnclass encoder dir"):
        OnnxEncoder(tmp_path)
    (tmp_path / "knnclass-encoder.json").write_text("{}")
    with pytest.raises(EncoderError, match="lacks"):
        OnnxEncoder(tmp_path)


def _meta_only_dir(path: Path, **extra: object) -> Path:
    path.mkdir()
    meta = {"identity": "x", "model_file": "model.onnx", "dim": 4, "max_tokens": 8, "pooling": "mean", **extra}
    (path / "knnclass-encoder.json").write_text(json.dumps(meta))
    return path


def test_cuda_refuses_an_encoder_without_its_fp16_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(EncoderError, match="re-export it with its fp16 CUDA graph"):
        OnnxEncoder(_meta_only_dir(tmp_path / "enc"), device="cuda")


def test_device_env_reaches_the_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    from knnclass.encoders import load_encoder

    monkeypatch.setenv("KNNCLASS_DEVICE", "cuda")
    with pytest.raises(DependencyError, match="onnxruntime-gpu"):
        load_encoder(None)
    monkeypatch.setenv("KNNCLASS_DEVICE", "tpu")
    with pytest.raises(InputError, match="device must be"):
        load_encoder(None)


def test_knnclass_threads_env_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from knnclass._cpu import encoder_threads, usable_cpus

    monkeypatch.delenv("KNNCLASS_THREADS", raising=False)
    assert encoder_threads() == usable_cpus()
    monkeypatch.setenv("KNNCLASS_THREADS", "3")
    assert encoder_threads() == 3
    for bad in ("abc", "0", "-2", "1.5"):
        monkeypatch.setenv("KNNCLASS_THREADS", bad)
        with pytest.raises(InputError, match="KNNCLASS_THREADS must be a positive integer"):
            OnnxEncoder(_meta_only_dir(tmp_path / f"enc{bad}"))


def test_export_never_replaces_a_directory_that_is_not_an_encoder(tmp_path: Path) -> None:
    from knnclass.encoders.export import check_out_dir
    from knnclass.encoders.onnx import METADATA_FILE

    check_out_dir(tmp_path / "new")  # new, or empty: fine
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tickets.csv").write_text("text,category\n")
    with pytest.raises(InputError, match="not a knnclass encoder"):
        check_out_dir(tmp_path / "data")
    assert (tmp_path / "data" / "tickets.csv").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        check_out_dir(tmp_path / "f")
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / METADATA_FILE).write_text("{}")
    check_out_dir(tmp_path / "enc")  # an earlier export: replaced


def test_cli_export_refuses_a_foreign_out_dir(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from knnclass.cli import cli

    (tmp_path / "keep.txt").write_text("precious")
    r = CliRunner().invoke(cli, ["export", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "not a knnclass encoder" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_identity_ignores_the_folder_name_not_the_content() -> None:
    from knnclass.encoders.base import same_encoder

    assert same_encoder("all-MiniLM-L6-v2-int8-8dc68509361382c6", "my-copy-int8-8dc68509361382c6")
    assert not same_encoder("all-MiniLM-L6-v2-int8-8dc68509361382c6", "all-MiniLM-L6-v2-int8-0000000000000000")
    assert not same_encoder("all-MiniLM-L6-v2-int8-8dc68509361382c6", "all-MiniLM-L6-v2-none-8dc68509361382c6")
    assert same_encoder("fake-1234", "fake-1234") and not same_encoder("fake-1234", "fake-5678")
