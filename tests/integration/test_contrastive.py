"""Contrastive tuning on a tiny, confusable Banking77 slice with the real model (a few steps each).

The Banking77 comparison is benchmarks/finetune.py --strategies knn,contrastive.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from knnclass.jobs.finetune import FinetuneSettings, TaskSet, load_tasks, run_finetune, split_validation

# card and top-up intents: close neighbours of each other, so the pretrained vote is not perfect
LABELS = [
    "card_arrival",
    "card_delivery_estimate",
    "card_not_working",
    "declined_card_payment",
    "pending_card_payment",
    "pending_top_up",
    "top_up_failed",
    "top_up_reverted",
]
SETTINGS = FinetuneSettings(
    strategy="contrastive",
    loss="supcon",
    epochs=2,
    lr=1e-4,
    batch_size=8,
    per_label=2,
    max_steps=5,
    seed=5,
    max_seq_length=32,
    threads=1,
)


@pytest.fixture(scope="module")
def slice_(data_dir: Path) -> tuple[TaskSet, TaskSet]:
    """8 confusable categories x 5 train / 3 validation examples, with urgency as a second label set."""
    data = load_tasks(data_dir / "train.csv", label_maps={"urgency": data_dir / "urgency.csv"})
    idx: list[int] = []
    for lab in LABELS:
        idx += [i for i, x in enumerate(data.labels["category"]) if x == lab][:8]
    return split_validation(data.subset(idx), 3 / 8, seed=0)


@pytest.fixture(scope="module")
def contrastive_run(
    slice_: tuple[TaskSet, TaskSet], tmp_path_factory: pytest.TempPathFactory, encoder_cache: Path
) -> Path:
    train, val = slice_
    out = tmp_path_factory.mktemp("ct") / "contrastive"
    run_finetune(train, val, SETTINGS, out, progress=False)
    return out


def _weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k.removeprefix("0.").removeprefix("auto_model."): v for k, v in load_file(str(path)).items()}


def test_contrastive_run_records_validation_per_epoch_and_moves_weights(contrastive_run: Path) -> None:
    from knnclass.encoders import default_model_dir
    from knnclass.jobs.head import load_heads

    run = json.loads((contrastive_run / "run.json").read_text())
    assert run["strategy"] == "contrastive" and run["encoder_tuned"] is True and run["tasks"] == ["category", "urgency"]
    assert run["trainer"].endswith("SentenceTransformerTrainer") and run["timing"]["steps"] == 5
    assert run["loss"]["name"] == "supcon" and run["loss"]["labels_per_batch"] == 4
    # epoch 0 is the pretrained model; every epoch is scored by the kNN vote on validation
    hist = run["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2] and [h.get("steps") for h in hist] == [None, 4, 5]
    for h in hist:
        assert 0 < h["validation"]["category"]["knn"]["accuracy"] <= 1 and h["score"] == pytest.approx(
            np.mean([h["validation"][t]["knn"]["accuracy"] for t in run["tasks"]])
        )
        assert h["top_confusions"] and h["train_confusions"] > 0  # the hard negatives the next batches use
    assert 0 < hist[1]["weight_shift"] < hist[2]["weight_shift"] < 0.05  # small lr: moved, not far
    assert all(h["train_loss"] > 0 for h in hist[1:])
    best = max(hist, key=lambda h: (h["score"], -h["epoch"]))
    assert run["best_epoch"] == best["epoch"]
    # the saved encoder is the best epoch's: tuned weights unless the pretrained one won
    before = _weights(default_model_dir() / "model.safetensors")
    after = _weights(contrastive_run / "encoder-st" / "model.safetensors")
    key = "encoder.layer.3.attention.self.query.weight"
    assert np.array_equal(before[key], after[key]) == (run["best_epoch"] == 0)
    # a centroid head per label set, servable with numpy; the exported encoder passed the parity gate
    assert set(load_heads(contrastive_run / "heads.npz")) == {"category", "urgency"} and run["head_kind"] == "centroid"
    meta = json.loads((contrastive_run / "encoder" / "knnclass-encoder.json").read_text())
    assert meta["parity"]["cosine_min"] >= 0.98 and run["serve"] in ("knn", "head", "ensemble")
    assert {"paraphrase_accuracy_before", "paraphrase_accuracy", "neighbour_agreement"} <= set(run["forgetting"])


def test_promote_contrastive_run(contrastive_run: Path, slice_: tuple[TaskSet, TaskSet], tmp_path: Path) -> None:
    from knnclass.classifier import Classifier
    from knnclass.encoders import load_encoder
    from knnclass.jobs.reindex import promote, rollback, run_encoder_dir
    from knnclass.store.edge import EdgeStore

    train, _ = slice_
    assert run_encoder_dir(contrastive_run) == contrastive_run / "encoder"
    st = EdgeStore(tmp_path / "store")
    clf = Classifier(st, "tickets", encoder=load_encoder(None))
    clf.index(train.examples("category"))
    clf.tune()
    res = promote(st, "tickets", contrastive_run)
    assert (res["from"], res["to"], res["count"]) == ("v1", "v2", 40) and res["tuning"]["mode"] == "validation"
    tuned = Classifier(st, "tickets", encoder=load_encoder(contrastive_run / "encoder"))
    preds, ref, _ = tuned.classify(["my new card still has not arrived"])
    assert ref.version == "v2" and preds[0].neighbours
    assert rollback(st, "tickets")["to"] == "v1"
    st.close()


def test_cli_finetune_contrastive_same_seed_same_run(
    contrastive_run: Path, slice_: tuple[TaskSet, TaskSet], tmp_path: Path
) -> None:
    """`knnclass finetune --strategy contrastive` with the fixture's settings repeats its run exactly."""
    from click.testing import CliRunner

    from knnclass.cli import cli

    train, val = slice_
    train.write_csv(tmp_path / "train.csv")
    val.write_csv(tmp_path / "val.csv")
    s = SETTINGS
    args = ["finetune", str(tmp_path / "train.csv"), "--strategy", "contrastive", "--loss", s.loss]
    args += ["--validation", str(tmp_path / "val.csv"), "--label-col", "category", "--label-col", "urgency"]
    args += ["--epochs", str(s.epochs), "--lr", str(s.lr), "--batch-size", str(s.batch_size), "--seed", str(s.seed)]
    args += ["--per-label", str(s.per_label), "--max-steps", str(s.max_steps), "--threads", "1"]
    args += ["--max-seq-length", str(s.max_seq_length), "--no-export", "--out", str(tmp_path / "run"), "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)  # nothing but run.json on stdout: the trainer prints no logs there
    first = json.loads((contrastive_run / "run.json").read_text())
    assert again["history"] == first["history"] and again["best_epoch"] == first["best_epoch"]
    a = _weights(contrastive_run / "encoder-st" / "model.safetensors")
    b = _weights(tmp_path / "run" / "encoder-st" / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "run" / "encoder").exists()  # --no-export


def test_cli_compare_with_contrastive(slice_: tuple[TaskSet, TaskSet], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from knnclass.cli import cli

    train, val = slice_
    train.write_csv(tmp_path / "train.csv")
    val.write_csv(tmp_path / "val.csv")
    args = ["compare", str(tmp_path / "train.csv"), "--strategies", "knn,contrastive", "--loss", "mnrl"]
    args += ["--validation", str(tmp_path / "val.csv"), "--batch-size", "8", "--max-seq-length", "32"]
    args += ["--threads", "1", "--epochs", "1", "--max-steps", "2", "--lr", "1e-4"]
    args += ["--test", str(tmp_path / "val.csv"), "--out", str(tmp_path / "cmp"), "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    names = {row["name"] for row in rep["ranking"]}
    ensemble = "contrastive: ensemble (head + kNN vote)"
    assert {"knn: kNN vote (frozen)", "contrastive: kNN vote", "contrastive: centroid head", ensemble} == names
    row = next(r for r in rep["ranking"] if r["name"] == ensemble)
    assert 0 < row["test_accuracy"] <= 1 and row["classifier"] == "ensemble"
    row = next(r for r in rep["ranking"] if r["name"] == "contrastive: kNN vote")
    assert 0 < row["test_accuracy"] <= 1 and row["forgetting"]["neighbour_agreement"] <= 1
    run = json.loads((tmp_path / "cmp" / "contrastive" / "run.json").read_text())
    assert run["loss"]["name"] == "mnrl" and [h["epoch"] for h in run["history"]] == [0, 1]
    assert 0 < run["validation"]["category"]["ensemble"]["rule"]["blend"] < 1  # the vote always has a say
    assert (tmp_path / "cmp" / "contrastive" / "encoder" / "knnclass-encoder.json").exists()
    assert "contrastive: kNN vote" in (tmp_path / "cmp" / "report.md").read_text()
