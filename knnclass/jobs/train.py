"""Encoder tuning on sentence-transformers' SentenceTransformerTrainer: full, last-layer, contrastive.

One trainer set-up for the three: the dataset is (text, label codes per label set), the
loss a module from jobs.losses (cosine heads + cross-entropy, or a contrastive loss over
label-grouped batches), the optimizer AdamW with the encoder's small learning rate (and the
heads' own), a decaying schedule with warm-up, gradient clipping at 1. After every epoch a
callback embeds train and validation, scores the kNN vote (and heads) exactly as the other
strategies are scored, keeps the best epoch's weights (the pretrained model is epoch 0 and
is kept when no epoch beats it), and, for contrastive, re-mines the label confusions that
choose the next batches' hard negatives.

torch / sentence-transformers / accelerate are imported inside the functions only.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import DependencyError, InputError
from .forgetting import forgetting_figures, general_vectors
from .head import HEADS_FILE, Head, save_heads
from .settings import FinetuneSettings
from .tasks import TaskSet
from .validation import evaluate_embeddings, fmt, label_confusions, onnx_embedder, selection_score

__all__ = ["TUNED", "require_torch", "torch_device", "train_encoder"]

TUNED = ("full", "last-layer", "contrastive")


def require_torch() -> None:
    """Raise a DependencyError naming the missing piece of the train extra."""
    try:
        import accelerate  # noqa: F401
        import datasets  # noqa: F401
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise DependencyError(
            f"fine-tuning needs the train extra ({e.name} is missing): pip install 'knnclass[train]'"
        ) from None


def _set_seed(seed: int) -> None:
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (set before CUDA starts)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def torch_device(device: str) -> str:
    """The torch device a run trains on: `device` (cpu, cuda or auto) given what torch sees."""
    require_torch()
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise DependencyError("device cuda: torch sees no CUDA device (a CUDA build of torch and a GPU are needed)")
    return "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"


def _top_confusions(conf: np.ndarray, names: list[str], n: int = 5) -> list[list[Any]]:
    flat = np.argsort(-conf, axis=None, kind="stable")[:n]
    return [[names[a], names[b], int(conf[a, b])] for a, b in zip(*np.unravel_index(flat, conf.shape), strict=True)]


def train_encoder(
    train: TaskSet,
    val: TaskSet,
    s: FinetuneSettings,
    out: Path,
    base: Path,
    log: Callable[[str], None],
    progress: bool,
) -> dict[str, Any]:
    """Tune the encoder (full / last-layer / contrastive), keep the best epoch, save and export it."""
    require_torch()
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.model_card import BaseModelCardCallback
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from tqdm import tqdm
    from transformers import TrainerCallback, get_scheduler
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from .losses import ContrastiveLoss, CosineHeadLoss, LabelGroupBatchSampler

    if s.strategy not in TUNED:
        raise InputError(f"strategy {s.strategy!r} tunes no encoder")
    _set_seed(s.seed)
    if s.threads:
        torch.set_num_threads(s.threads)
    t_start = time.perf_counter()
    device = torch_device(s.device)
    model = SentenceTransformer(str(base), device=device)
    serving_max_len = int(model.max_seq_length or s.max_seq_length)
    model.max_seq_length = min(s.max_seq_length, serving_max_len)  # training-time truncation only

    # Freeze: nothing (full, contrastive) or every layer below the top one(s) (last-layer).
    frozen = 0
    if s.strategy == "last-layer":
        auto = model[0].auto_model
        layers = auto.encoder.layer
        frozen = len(layers) - 1 if s.freeze_layers is None else s.freeze_layers
        if not 0 <= frozen < len(layers):
            raise InputError(f"freeze_layers must be in [0, {len(layers) - 1}], not {frozen}")
        for p in auto.embeddings.parameters():
            p.requires_grad = False
        for layer in layers[:frozen]:
            for p in layer.parameters():
                p.requires_grad = False

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(
            model.encode(
                texts, batch_size=128, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            ),
            dtype=np.float32,
        )

    general_before = general_vectors(encode)
    before_forgetting = forgetting_figures(encode)
    train_vecs = encode(train.texts)
    val_vecs = encode(val.texts)

    label_names = {t: sorted(set(train.labels[t])) for t in train.tasks}
    codes = {t: np.array([label_names[t].index(lab) for lab in train.labels[t]]) for t in train.tasks}
    primary = train.tasks[0]
    contrastive = s.strategy == "contrastive"

    loss: ContrastiveLoss | CosineHeadLoss
    sampler: LabelGroupBatchSampler | None = None
    if contrastive:
        loss = ContrastiveLoss(model, s.loss, len(train.tasks), s.scale, s.margin, s.task_weight)
        sampler = LabelGroupBatchSampler(codes[primary], s.batch_size, s.per_label, s.hard_negatives, s.seed)
        steps_per_epoch = len(sampler)
    else:
        # One cosine head per task, initialised at the normalised class means (nearest-centroid start).
        init = {
            t: np.stack([train_vecs[codes[t] == i].mean(axis=0) for i in range(len(label_names[t]))])
            for t in train.tasks
        }
        loss = CosineHeadLoss(model, init, s.scale, s.label_smoothing)
        steps_per_epoch = math.ceil(len(train.texts) / s.batch_size)

    def numpy_heads(vecs: np.ndarray) -> dict[str, Head]:
        """The served heads: the trained cosine heads, or (contrastive) the tuned space's class centroids."""
        if isinstance(loss, CosineHeadLoss):
            return {t: Head(t, "cosine", label_names[t], [loss.weights(t)], scale=s.scale) for t in train.tasks}
        return {
            t: Head(
                t,
                "cosine",
                label_names[t],
                [np.stack([vecs[codes[t] == i].mean(axis=0) for i in range(len(label_names[t]))])],
                scale=s.scale,
            )
            for t in train.tasks
        }

    history: list[dict[str, Any]] = []
    enc_params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in enc_params]
    start_norm = math.sqrt(sum(float((p0**2).sum()) for p0 in start))

    def weight_shift() -> float:
        """How far the trainable encoder weights moved from the pretrained ones (relative L2)."""
        moved = sum(float(((p.detach() - p0) ** 2).sum()) for p, p0 in zip(enc_params, start, strict=True))
        return round(math.sqrt(moved) / start_norm, 6)

    def record(epoch: int, steps: int, train_loss: float | None) -> float:
        nonlocal train_vecs, val_vecs
        if epoch:
            train_vecs, val_vecs = encode(train.texts), encode(val.texts)
        ev = evaluate_embeddings(train_vecs, train, val_vecs, val, numpy_heads(train_vecs))
        score = selection_score(ev, knn_only=contrastive)  # contrastive serves the vote: pick by it
        entry: dict[str, Any] = {"epoch": epoch, "validation": ev, "score": score}
        if epoch:
            entry.update(
                steps=steps,
                train_loss=None if train_loss is None else round(train_loss, 5),
                weight_shift=weight_shift(),
            )
        if sampler is not None:
            conf = label_confusions(train_vecs, codes[primary], len(label_names[primary]))
            sampler.set_confusions(conf)
            entry["train_confusions"] = int(conf.sum())
            entry["top_confusions"] = _top_confusions(conf, label_names[primary])
        history.append(entry)
        log(f"epoch {epoch}{' (pretrained)' if not epoch else ''}: {fmt(ev)}")
        return score

    best = {"score": record(0, 0, None), "epoch": 0}
    best_vecs = train_vecs  # the kept epoch's train vectors (its centroid heads)
    best_state = copy.deepcopy(loss.state_dict())  # the encoder (loss.model) and any heads

    head_params = list(loss.heads.parameters()) if isinstance(loss, CosineHeadLoss) else []
    groups: list[dict[str, Any]] = [{"params": enc_params, "lr": s.lr}]
    if head_params:
        groups.append({"params": head_params, "lr": s.head_lr})
    optim = torch.optim.AdamW(groups, weight_decay=0.01)
    total = steps_per_epoch * s.epochs if s.max_steps is None else min(s.max_steps, steps_per_epoch * s.epochs)
    sched_name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[s.scheduler]
    sched = get_scheduler(sched_name, optim, num_warmup_steps=int(s.warmup * total), num_training_steps=total)

    bar = tqdm(
        total=total, desc=f"{s.strategy} tuning", unit="step", file=sys.stderr, disable=not progress, mininterval=1.0
    )

    class EpochEnd(TrainerCallback):
        """Validation after every epoch; the best epoch's weights are kept."""

        def __init__(self) -> None:
            self.seen = 0
            self.epoch = 0

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            bar.update(1)
            if loss.losses:
                bar.set_postfix(epoch=self.epoch + 1, loss=f"{np.mean(loss.losses[-20:]):.3f}")

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            nonlocal best_vecs
            self.epoch += 1
            epoch_losses = loss.losses[self.seen :]
            self.seen = len(loss.losses)
            score = record(self.epoch, state.global_step, float(np.mean(epoch_losses)) if epoch_losses else None)
            if score > best["score"]:
                best.update(score=score, epoch=self.epoch)
                best_vecs = train_vecs
                best_state.clear()
                best_state.update(copy.deepcopy(loss.state_dict()))
            model.train()

    data = Dataset.from_dict(
        {"text": train.texts, "label": [[int(codes[t][i]) for t in train.tasks] for i in range(len(train.texts))]}
    )
    t_train = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="knnclass-trainer-") as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            num_train_epochs=s.epochs,
            max_steps=total if s.max_steps is not None else -1,
            per_device_train_batch_size=s.batch_size,
            seed=s.seed,
            data_seed=s.seed,
            max_grad_norm=1.0,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=device == "cpu",
            dataloader_drop_last=False,
            batch_sampler=cast(Any, lambda dataset, **kw: sampler) if sampler is not None else "batch_sampler",
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=data, loss=loss, optimizers=(optim, sched), callbacks=[EpochEnd()]
        )
        for cb in (PrinterCallback, ProgressCallback):  # nothing on stdout (the CLI's --json owns it)
            trainer.remove_callback(cb)
        for c in list(trainer.callback_handler.callbacks):  # no model card statistics over the train set
            if isinstance(c, BaseModelCardCallback):
                trainer.remove_callback(c)
        log(f"trainer ready in {time.perf_counter() - t_train:.1f}s; {total} steps")
        trainer.train()
    bar.close()
    train_s = time.perf_counter() - t_train
    steps = max((h.get("steps", 0) for h in history), default=0)
    best_epoch = int(best["epoch"])
    loss.load_state_dict(best_state)
    model.eval()
    final_heads = numpy_heads(best_vecs)
    st_dir = out / "encoder-st"
    model.max_seq_length = serving_max_len  # the tuned encoder serves texts as long as the base model did
    model.save(str(st_dir))
    _legacy_st_config(st_dir, int(model.max_seq_length))
    save_heads(out / HEADS_FILE, list(final_heads.values()))
    after = forgetting_figures(encode, general_before)
    forgetting = {
        "paraphrase_accuracy_before": before_forgetting["paraphrase_accuracy"],
        "paraphrase_accuracy": after["paraphrase_accuracy"],
        "neighbour_agreement": after["neighbour_agreement"],
        "n": after["n"],
    }
    timing: dict[str, Any] = {
        "train_s": round(train_s, 2),
        "steps": steps,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
    }
    encoder_ref = str(st_dir)
    best_validation = next(h["validation"] for h in history if h["epoch"] == best_epoch)
    validation = best_validation
    if s.export:
        from ..encoders.export import ExportSettings, export_encoder

        t_exp = time.perf_counter()
        meta = export_encoder(st_dir, out / "encoder", ExportSettings(), name=f"ft-{s.strategy}-{out.resolve().name}")
        timing["export_s"] = round(time.perf_counter() - t_exp, 2)
        encoder_ref = str((out / "encoder").resolve())
        # Re-score with the exported (served) encoder: what `promote` will serve.
        onnx_embed, _ = onnx_embedder(out / "encoder")
        validation = evaluate_embeddings(onnx_embed(train.texts), train, onnx_embed(val.texts), val, final_heads)
        timing["parity"] = meta.get("parity")
    timing["job_s"] = round(time.perf_counter() - t_start, 2)
    result: dict[str, Any] = {
        "encoder": encoder_ref,
        "encoder_st": str(st_dir.resolve()),
        "encoder_tuned": True,
        "frozen_layers": frozen,
        "trainable_params": sum(p.numel() for p in enc_params),
        "total_params": sum(p.numel() for p in model.parameters()),
        "heads": HEADS_FILE,
        "head_kind": "centroid" if contrastive else "trained",
        "validation": validation,
        "validation_torch": best_validation,
        "history": history,
        "best_epoch": best_epoch,
        "forgetting": forgetting,
        "timing": timing,
        "trainer": "sentence_transformers.SentenceTransformerTrainer",
    }
    if contrastive:
        result["loss"] = {
            "name": s.loss,
            "per_label": s.per_label,
            "labels_per_batch": sampler.labels_per_batch if sampler else None,
            "hard_negatives": s.hard_negatives,
            "multi_task": "sum" if len(train.tasks) > 1 else None,
        }
    return result


def _legacy_st_config(st_dir: Path, max_seq_length: int) -> None:
    """sentence-transformers 5 writes `pooling_mode: mean` and no `max_seq_length`; add the
    classic keys beside them so readers of the older format (the exporter) understand it."""
    sbert = st_dir / "sentence_bert_config.json"
    if sbert.exists():
        cfg = json.loads(sbert.read_text())
        cfg.setdefault("max_seq_length", max_seq_length)
        sbert.write_text(json.dumps(cfg, indent=2))
    for cfg_path in st_dir.glob("*Pooling*/config.json"):
        cfg = json.loads(cfg_path.read_text())
        mode = cfg.get("pooling_mode")
        if isinstance(mode, str):
            for m in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens"):
                cfg.setdefault(f"pooling_mode_{m}", m.split("_token")[0] == mode or m == f"{mode}_tokens")
            cfg_path.write_text(json.dumps(cfg, indent=2))
