"""The four strategies on a tiny Banking77 slice with the real model: artefacts, moving scores, promote.

Few steps each (tens of seconds on 2 cores); the full comparison is benchmarks/finetune.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from knnclass.jobs.finetune import FinetuneSettings, TaskSet, load_tasks, run_finetune, split_validation
from knnclass.jobs.head import load_heads


@pytest.fixture(scope="module")
def tiny(data_dir: Path) -> tuple[TaskSet, TaskSet]:
    """8 categories x 5 examples (40) for training, 3 each for validation, with urgency as a second task."""
    data = load_tasks(data_dir / "train.csv", label_maps={"urgency": data_dir / "urgency.csv"})
    labels = sorted(set(data.labels["category"]))[::10][:8]
    idx: list[int] = []
    for lab in labels:
        idx += [i for i, x in enumerate(data.labels["category"]) if x == lab][:8]
    return split_validation(data.subset(idx), 3 / 8, seed=0)


@pytest.fixture(scope="module")
def full_run(tiny: tuple[TaskSet, TaskSet], tmp_path_factory: pytest.TempPathFactory, encoder_cache: Path) -> Path:
    train, val = tiny
    out = tmp_path_factory.mktemp("ft") / "full"
    s = FinetuneSettings(
        strategy="full", epochs=2, lr=5e-5, head_lr=1e-2, batch_size=8, max_steps=6, seed=3, max_seq_length=32
    )
    run_finetune(train, val, s, out, progress=False)
    return out


def test_full_tuning_artefacts_and_score_moves(full_run: Path) -> None:
    run = json.loads((full_run / "run.json").read_text())
    assert run["strategy"] == "full" and run["tasks"] == ["category", "urgency"] and run["n_train"] == 40
    # the run dir: ST model, its ONNX export through the parity gate, numpy heads, metrics, settings, timing
    assert (full_run / "encoder-st" / "model.safetensors").exists()
    meta = json.loads((full_run / "encoder" / "knnclass-encoder.json").read_text())
    assert meta["parity"]["cosine_min"] >= 0.98
    heads = load_heads(full_run / "heads.npz")
    assert set(heads) == {"category", "urgency"} and heads["category"].kind == "cosine"
    assert run["settings"]["lr"] == 5e-5 and run["timing"]["steps"] == 6 and run["timing"]["train_s"] > 0
    import torch

    trained_on = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    assert run["settings"]["device"] == "auto" and run["timing"]["device"] == trained_on
    for task in ("category", "urgency"):
        assert 0 <= run["validation"][task]["knn"]["accuracy"] <= 1 and "head" in run["validation"][task]
    # validation is scored before training and after every epoch; training changed the model
    hist = run["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2]
    assert hist[0]["validation"]["category"]["head"]["loss"] != hist[-1]["validation"]["category"]["head"]["loss"]
    f = run["forgetting"]
    assert {"paraphrase_accuracy_before", "paraphrase_accuracy", "neighbour_agreement"} <= set(f)
    assert run["best_epoch"] in (0, 1, 2) and run["serve"] in ("knn", "head", "ensemble")


def test_tuned_encoder_changes_and_serves_without_torch_head(full_run: Path, data_dir: Path) -> None:
    from safetensors.numpy import load_file

    from knnclass.encoders import default_model_dir, load_encoder

    enc = load_encoder(full_run / "encoder")
    assert enc.max_tokens == load_encoder(None).max_tokens  # trained on 32 tokens, serves the base model's limit
    v = enc.embed(["my card has not arrived", "how do I change my pin"])
    assert v.shape == (2, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-3)
    labels, conf = load_heads(full_run / "heads.npz")["urgency"].predict(v)
    assert len(labels) == 2 and all(0 < c <= 1 for c in conf)
    # the saved weights are the tuned ones, unless validation kept the pretrained epoch 0
    run = json.loads((full_run / "run.json").read_text())
    before = load_file(str(default_model_dir() / "model.safetensors"))
    after = load_file(str(full_run / "encoder-st" / "model.safetensors"))
    key = next(k for k in after if k.endswith("layer.0.attention.self.query.weight"))
    before_key = next(k for k in before if k.endswith("layer.0.attention.self.query.weight"))
    assert np.array_equal(before[before_key], after[key]) == (run["best_epoch"] == 0)


def test_last_layer_freezes_all_but_the_top(tiny: tuple[TaskSet, TaskSet], tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from knnclass.encoders import default_model_dir

    train, val = tiny
    s = FinetuneSettings(strategy="last-layer", epochs=1, lr=1e-3, batch_size=8, max_steps=3, export=False)
    run = run_finetune(train, val, s, tmp_path / "ll", progress=False)
    assert run["frozen_layers"] == 5 and not (tmp_path / "ll" / "encoder").exists()
    assert 0 < run["trainable_params"] < run["total_params"] / 4
    before = load_file(str(default_model_dir() / "model.safetensors"))
    after = load_file(str(tmp_path / "ll" / "encoder-st" / "model.safetensors"))

    def w(sd: dict[str, np.ndarray], key: str) -> np.ndarray:
        return next(v for k, v in sd.items() if k.endswith(key))

    if run["best_epoch"] == 1:
        assert np.array_equal(
            w(before, "layer.0.attention.self.query.weight"), w(after, "layer.0.attention.self.query.weight")
        )
        assert np.array_equal(
            w(before, "embeddings.word_embeddings.weight"), w(after, "embeddings.word_embeddings.weight")
        )
        assert not np.array_equal(w(before, "layer.5.output.dense.weight"), w(after, "layer.5.output.dense.weight"))
    assert run["history"][0]["validation"] != run["history"][1]["validation"] or run["history"][1]["train_loss"] > 0


@pytest.mark.parametrize("classifier", ["logreg", "mlp", "sklearn.svm:LinearSVC"])
def test_transfer_heads(tiny: tuple[TaskSet, TaskSet], tmp_path: Path, classifier: str, encoder_cache: Path) -> None:
    train, val = tiny
    params = {"max_iter": 300} if classifier == "mlp" else {}
    run = run_finetune(
        train,
        val,
        FinetuneSettings(strategy="transfer", classifier=classifier, classifier_params=params),
        tmp_path / "t",
    )
    assert run["encoder_tuned"] is False and (tmp_path / "t" / "heads.npz").exists()
    assert run["validation"]["category"]["head"]["accuracy"] > 0.5
    assert set(load_heads(tmp_path / "t" / "heads.npz")) == {"category", "urgency"}


def test_knn_strategy_tunes_the_vote(tiny: tuple[TaskSet, TaskSet], tmp_path: Path, encoder_cache: Path) -> None:
    train, val = tiny
    run = run_finetune(train, val, FinetuneSettings(strategy="knn"), tmp_path / "k")
    r = run["validation"]["category"]["knn"]
    assert r["accuracy"] > 0.5 and r["rule"]["vote"] in ("majority", "weighted") and run["heads"] is None
    assert (tmp_path / "k" / "validation.csv").exists() and run["serve"] == "knn"


def test_promote_tuned_encoder_into_store(full_run: Path, tiny: tuple[TaskSet, TaskSet], tmp_path: Path) -> None:
    from knnclass.classifier import Classifier
    from knnclass.encoders import load_encoder
    from knnclass.jobs.reindex import promote, rollback
    from knnclass.store.edge import EdgeStore

    train, _ = tiny
    st = EdgeStore(tmp_path / "store")
    clf = Classifier(st, "tickets", encoder=load_encoder(None))
    clf.index(train.examples("category"))
    clf.tune()
    res = promote(st, "tickets", full_run)
    assert (res["from"], res["to"], res["count"]) == ("v1", "v2", 40)
    tuned = Classifier(st, "tickets", encoder=load_encoder(full_run / "encoder"))
    preds, ref, _ = tuned.classify(["I still have not received my card"])
    assert ref.version == "v2" and preds[0].neighbours
    assert rollback(st, "tickets")["to"] == "v1"
    st.close()


@pytest.mark.slow
def test_seed_makes_tuning_deterministic(tiny: tuple[TaskSet, TaskSet], tmp_path: Path) -> None:
    train, val = tiny
    s = FinetuneSettings(strategy="full", epochs=1, batch_size=8, max_steps=3, export=False, seed=7)
    a = run_finetune(train, val, s, tmp_path / "a", progress=False)
    b = run_finetune(train, val, s, tmp_path / "b", progress=False)
    assert a["history"] == b["history"]
    ha, hb = load_heads(tmp_path / "a" / "heads.npz"), load_heads(tmp_path / "b" / "heads.npz")
    assert np.array_equal(ha["category"].weights[0], hb["category"].weights[0])


def _indexed(tiny: tuple[TaskSet, TaskSet], tmp_path: Path) -> tuple[Any, list[str]]:
    """train.csv / val.csv written, train indexed and tuned through the CLI: (runner, store args)."""
    from click.testing import CliRunner

    from knnclass.cli import cli

    train, val = tiny
    train.write_csv(tmp_path / "train.csv")
    val.write_csv(tmp_path / "val.csv")
    r = CliRunner()
    store = ["--store", str(tmp_path / "store")]
    res = r.invoke(cli, ["index", str(tmp_path / "train.csv"), *store])
    assert res.exit_code == 0, res.output
    assert r.invoke(cli, ["tune", *store]).exit_code == 0
    return r, store


def test_cli_finetune_compare_promote_rollback_prune(
    tiny: tuple[TaskSet, TaskSet], tmp_path: Path, data_dir: Path
) -> None:
    from knnclass.cli import cli

    r, store = _indexed(tiny, tmp_path)
    res = r.invoke(
        cli,
        [
            "finetune",
            str(tmp_path / "train.csv"),
            "--strategy",
            "transfer",
            "--validation",
            str(tmp_path / "val.csv"),
            "--label-col",
            "category",
            "--label-col",
            "urgency",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "category: kNN accuracy" in res.output and "urgency:" in res.output and "general skill" in res.output
    res = r.invoke(
        cli,
        [
            "compare",
            str(tmp_path / "train.csv"),
            "--validation",
            str(tmp_path / "val.csv"),
            "--strategies",
            "knn,transfer",
            "--test",
            str(tmp_path / "val.csv"),
            "--out",
            str(tmp_path / "cmp"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert {row["strategy"] for row in rep["ranking"]} == {"knn", "transfer"}
    assert (tmp_path / "cmp" / "report.md").exists() and (tmp_path / "cmp" / "chart.png").stat().st_size > 1000
    res = r.invoke(cli, ["promote", str(tmp_path / "run"), *store])
    assert res.exit_code == 0, res.output
    assert "v1 -> v2" in res.output
    res = r.invoke(cli, ["classify", "my card has not arrived", "--json", *store])
    assert json.loads(res.stdout)["version"] == "v2"
    assert "v2 -> v1" in r.invoke(cli, ["rollback", *store]).output
    assert "dropped v2" in r.invoke(cli, ["prune", *store]).output
    assert r.invoke(cli, ["rollback", *store]).exit_code != 0


def test_promoted_transfer_head_serves_its_own_accuracy(
    tiny: tuple[TaskSet, TaskSet], tmp_path: Path, encoder_cache: Path
) -> None:
    """promote --rule head: classify / evaluate answer with the head, calibrated, with neighbours as evidence."""
    from knnclass.cli import cli

    _, val = tiny
    r, store = _indexed(tiny, tmp_path)
    run = tmp_path / "run"
    args = ["finetune", str(tmp_path / "train.csv"), "--strategy", "transfer", "--classifier", "logreg"]
    res = r.invoke(cli, [*args, "--validation", str(tmp_path / "val.csv"), "--out", str(run)])
    assert res.exit_code == 0, res.output
    head_accuracy = json.loads((run / "run.json").read_text())["validation"]["category"]["head"]["accuracy"]
    res = r.invoke(cli, ["promote", str(run), "--rule", "head", *store])
    assert res.exit_code == 0 and "serving head" in res.output, res.output
    res = r.invoke(cli, ["evaluate", str(tmp_path / "val.csv"), "--json", *store])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["source"] == "head" and m["guess_accuracy"] == pytest.approx(head_accuracy, abs=1e-5)  # run.json rounds
    # every served suggestion is the head's own prediction
    heads = load_heads(run / "heads.npz")
    from knnclass.encoders import load_encoder

    vecs = load_encoder().embed(val.texts)
    assert heads["category"].predict(vecs)[0] == [
        p["suggestion"]
        for p in json.loads(r.invoke(cli, ["classify", *val.texts, "--json", *store]).stdout)["predictions"]
    ]
    p = json.loads(r.invoke(cli, ["classify", "my card has not arrived", "--json", *store]).stdout)["predictions"][0]
    assert p["source"] == "head" and p["neighbours"] and 0 < p["confidence"] <= 1


def test_cli_device_cuda_without_a_gpu_is_refused_before_anything_is_written(
    tiny: tuple[TaskSet, TaskSet], tmp_path: Path
) -> None:
    import torch
    from click.testing import CliRunner

    from knnclass.cli import cli

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    tiny[0].write_csv(tmp_path / "train.csv")
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["finetune", str(tmp_path / "train.csv"), "--device", "cuda", "--out", str(out)])
    assert res.exit_code != 0 and "torch sees no CUDA device" in res.output and "Traceback" not in res.output
    assert not out.exists()
