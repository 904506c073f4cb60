"""Encoder fine-tuning jobs: full, last-layer, transfer (frozen encoder) and plain kNN.

Every job writes a run dir::

    RUN/run.json          settings, tasks, validation metrics per epoch and final, timing,
                          forgetting check, what to serve
    RUN/encoder-st/       the tuned encoder, sentence-transformers format (full, last-layer)
    RUN/encoder/          the same exported to ONNX through the spine's export + parity gate
    RUN/heads.npz         one numpy-servable head per label set (see jobs.head)
    RUN/validation.csv    the validation split (so `promote` can re-tune the vote rule)

torch and sentence-transformers are imported inside the training functions only:
serving never imports this module's heavy dependencies.
"""

from __future__ import annotations

import copy
import csv
import importlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Example, read_examples, read_label_map
from ..errors import DependencyError, InputError
from ..metrics import score_predictions
from ..store.base import Hit
from ..tuning import K_MAX, TuningResult, tune_rule
from ..voting import Rule, vote_batch
from .head import HEADS_FILE, Head, save_heads

__all__ = [
    "GENERAL_PAIRS",
    "STRATEGIES",
    "FinetuneSettings",
    "TaskSet",
    "embed_cached",
    "forgetting_figures",
    "knn_hits",
    "load_tasks",
    "run_finetune",
    "split_validation",
]

STRATEGIES = ("full", "last-layer", "transfer", "knn")
CLASSIFIERS = ("logreg", "svm", "mlp", "knn")
RUN_FILE = "run.json"

# Paraphrase pairs far from support tickets: the "general skill" the forgetting check
# measures before and after tuning (each sentence's nearest neighbour should be its pair).
GENERAL_PAIRS: list[tuple[str, str]] = [
    ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
    ("It will rain heavily tomorrow afternoon.", "Expect strong showers tomorrow after lunch."),
    ("She won the marathon in record time.", "The runner finished the 42 km race faster than anyone before."),
    ("Add two cups of flour and stir well.", "Mix in a pair of cups of flour thoroughly."),
    ("The museum opens at nine on weekdays.", "On working days the gallery lets visitors in from 9 am."),
    ("He plays the violin in an orchestra.", "He is a violinist in a symphony ensemble."),
    ("The volcano erupted, covering the town in ash.", "Ash from the eruption blanketed the village."),
    ("My grandmother grows tomatoes in her garden.", "Grandma cultivates tomatoes in her backyard."),
    ("The football match ended in a draw.", "Neither team won the soccer game."),
    ("Astronauts repaired the telescope in orbit.", "The space crew fixed the orbiting observatory."),
    ("The train to Paris was delayed by an hour.", "Our Paris-bound train ran sixty minutes late."),
    ("Photosynthesis turns sunlight into chemical energy.", "Plants convert light into stored energy."),
    ("The children built a sandcastle at the beach.", "Kids made a castle out of sand by the sea."),
    ("This novel is set in nineteenth-century Russia.", "The book takes place in Russia in the 1800s."),
    ("The dog barked at the mail carrier.", "The postman was barked at by the dog."),
    ("Water boils at one hundred degrees Celsius.", "At 100 °C water starts to boil."),
    ("The band released a new album last week.", "Last week the group put out their latest record."),
    ("He sprained his ankle while hiking.", "He twisted his ankle on a mountain walk."),
    ("The bakery sells fresh bread every morning.", "Each morning the baker offers newly baked loaves."),
    ("Elephants have excellent long-term memory.", "An elephant remembers things for many years."),
    ("The chess champion defended her title.", "The reigning chess queen kept her crown."),
    ("Snow closed the mountain pass overnight.", "The mountain road was blocked by snow during the night."),
    ("The students are preparing for their exams.", "The pupils are studying for upcoming tests."),
    (
        "A new species of frog was discovered in the rainforest.",
        "Scientists found a previously unknown frog in the jungle.",
    ),
    ("The painter used bright colours for the sunset.", "The artist painted the sunset in vivid hues."),
    ("The ship sailed across the Atlantic in ten days.", "The vessel crossed the Atlantic Ocean in a week and a half."),
    ("My phone battery dies quickly in the cold.", "Cold weather drains my mobile's battery fast."),
    ("The festival attracts thousands of visitors each summer.", "Every summer the fair draws huge crowds."),
    ("He is learning to speak Japanese.", "He is studying the Japanese language."),
    ("The bridge was built in the fourteenth century.", "The bridge dates from the 1300s."),
    ("The soup needs a little more salt.", "Add a pinch of salt to the soup."),
    ("Bees pollinate many of the crops we eat.", "Much of our food depends on pollination by bees."),
    ("The referee showed him a red card.", "He was sent off by the referee."),
    ("The lake freezes solid every winter.", "Each winter the lake turns to ice."),
    ("She painted the fence white.", "The fence was painted white by her."),
    ("The old castle is said to be haunted.", "People claim ghosts live in the ancient fortress."),
]


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that shapes a run; recorded in run.json."""

    strategy: str = "full"
    epochs: int = 3
    lr: float = 2e-5
    head_lr: float = 1e-3
    scheduler: str = "linear"  # linear | cosine | constant
    warmup: float = 0.1  # fraction of the steps
    batch_size: int = 32
    seed: int = 0
    freeze_layers: int | None = None  # last-layer: transformer layers frozen from the bottom (None: all but last)
    scale: float = 20.0  # cosine-head logit scale
    label_smoothing: float = 0.0
    max_seq_length: int = 128
    max_steps: int | None = None
    classifier: str = "logreg"
    classifier_params: dict[str, Any] = field(default_factory=dict)
    export: bool = True
    threads: int | None = None  # torch CPU threads (None: torch's default); 1 is faster on a busy machine

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.scheduler not in ("linear", "cosine", "constant"):
            raise InputError(f"--scheduler must be linear, cosine or constant, not {self.scheduler!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError("--epochs and --batch-size must be >= 1")
        if not 0 < self.lr < 1:
            raise InputError(f"--lr must be in (0, 1), not {self.lr}")
        if not 0 <= self.warmup < 1:
            raise InputError(f"--warmup is a fraction of the steps in [0, 1), not {self.warmup}")


@dataclass
class TaskSet:
    """Texts and one label list per task (label set); the first task is the primary one."""

    texts: list[str]
    labels: dict[str, list[str]]

    @property
    def tasks(self) -> list[str]:
        return list(self.labels)

    def subset(self, idx: Sequence[int]) -> TaskSet:
        return TaskSet([self.texts[i] for i in idx], {t: [v[i] for i in idx] for t, v in self.labels.items()})

    def examples(self, task: str) -> list[Example]:
        from ..data import example_id

        return [Example(example_id(t), t, lab) for t, lab in zip(self.texts, self.labels[task], strict=True)]

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", *self.tasks])
            for i, t in enumerate(self.texts):
                w.writerow([t, *(self.labels[k][i] for k in self.tasks)])


def load_tasks(
    path: Path,
    text_col: str = "text",
    label_cols: Sequence[str] = ("category",),
    label_maps: dict[str, Path] | None = None,
) -> TaskSet:
    """Read one task per label column, plus one per label map (applied to the first column)."""
    if not label_cols:
        raise InputError("at least one --label-col is needed")
    by_col = {c: read_examples(path, text_col, c) for c in label_cols}
    first = by_col[label_cols[0]]
    texts = [e.text for e in first]
    labels: dict[str, list[str]] = {}
    for c, exs in by_col.items():
        idx = {e.id: e.label for e in exs}
        labels[c] = [idx[e.id] for e in first]
    for name, map_path in (label_maps or {}).items():
        mapping = read_label_map(map_path)
        missing = sorted({lab for lab in labels[label_cols[0]] if lab not in mapping})
        if missing:
            raise InputError(f"{map_path}: no mapping for label(s) {', '.join(missing[:5])}")
        labels[name] = [mapping[lab] for lab in labels[label_cols[0]]]
    return TaskSet(texts, labels)


def split_validation(data: TaskSet, fraction: float, seed: int) -> tuple[TaskSet, TaskSet]:
    """Stratified (by the primary label) deterministic train/validation split."""
    if not 0 < fraction < 1:
        raise InputError(f"--val-fraction must be in (0, 1), not {fraction}")
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(data.labels[data.tasks[0]]):
        groups.setdefault(lab, []).append(i)
    val: list[int] = []
    for lab in sorted(groups):
        idx = groups[lab]
        rng.shuffle(idx)
        if len(idx) >= 2:
            val.extend(idx[: max(1, round(fraction * len(idx)))])
    chosen = set(val)
    train = [i for i in range(len(data.texts)) if i not in chosen]
    if not val or not train:
        raise InputError("too few examples to carve a validation set; pass --validation")
    return data.subset(train), data.subset(sorted(val))


# --- scoring helpers (numpy; exact search, same vote and tuner as the spine) ------------------
def knn_hits(train_vecs: np.ndarray, labels: Sequence[str], query: np.ndarray, width: int = K_MAX) -> list[list[Hit]]:
    """Exact cosine neighbours of each query among the train vectors, as store Hits."""
    width = min(width, len(labels))
    out: list[list[Hit]] = []
    for start in range(0, len(query), 512):
        sims = query[start : start + 512] @ train_vecs.T
        top = np.argpartition(-sims, width - 1, axis=1)[:, :width]
        part = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        part = np.take_along_axis(part, order, axis=1)
        for r in range(len(top)):
            out.append([Hit(str(j), labels[j], float(s)) for j, s in zip(top[r], part[r], strict=True)])
    return out


def knn_predict(train_vecs: np.ndarray, labels: Sequence[str], query: np.ndarray, rule: Rule) -> list[str | None]:
    """Predictions of the vote `rule` (exact search), as `classify` would make them."""
    names = sorted(set(labels))
    code = {lab: i for i, lab in enumerate(names)}
    k = min(rule.k(len(labels)), K_MAX, len(labels))
    hits = knn_hits(train_vecs, labels, query, k)
    codes = np.array([[code[h.label] for h in row] for row in hits])
    scores = np.array([[h.score for h in row] for row in hits])
    winner, conf, _, _ = vote_batch(codes, scores, k, rule.vote, len(names))
    return [names[w] if w >= 0 and c >= rule.threshold else None for w, c in zip(winner, conf, strict=True)]


def tune_knn(
    train_vecs: np.ndarray, labels: Sequence[str], val_vecs: np.ndarray, val_labels: Sequence[str]
) -> TuningResult:
    """The spine's rule tuning (top-k / top-k%, majority / weighted) on a validation set."""
    return tune_rule(list(val_labels), knn_hits(train_vecs, labels, val_vecs), len(labels))


def _metrics(truth: Sequence[str], pred: Sequence[str | None]) -> dict[str, float]:
    m = score_predictions(list(truth), list(pred))
    return {"accuracy": round(m["accuracy"], 5), "macro_f1": round(m["macro_f1"], 5)}


def forgetting_figures(embed: Callable[[list[str]], np.ndarray], base_vecs: np.ndarray | None = None) -> dict[str, Any]:
    """General skill outside the task: paraphrase retrieval accuracy on GENERAL_PAIRS and,
    given the original model's vectors, top-5 neighbourhood agreement with it."""
    texts = [s for pair in GENERAL_PAIRS for s in pair]
    vecs = embed(texts)
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -np.inf)
    nn = sims.argmax(axis=1)
    partner = np.arange(len(texts)) ^ 1
    out: dict[str, Any] = {"paraphrase_accuracy": round(float(np.mean(nn == partner)), 4), "n": len(texts)}
    if base_vecs is not None:
        b = base_vecs @ base_vecs.T
        np.fill_diagonal(b, -np.inf)
        k = 5
        mine = np.argsort(-sims, axis=1)[:, :k]
        theirs = np.argsort(-b, axis=1)[:, :k]
        overlap = [len(set(x) & set(y)) / k for x, y in zip(mine, theirs, strict=True)]
        out["neighbour_agreement"] = round(float(np.mean(overlap)), 4)
    return out


def general_vectors(embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    return embed([s for pair in GENERAL_PAIRS for s in pair])


# --- transfer classifiers ---------------------------------------------------------------------
def make_classifier(spec: str, params: dict[str, Any], seed: int) -> Any:
    """A scikit-learn estimator: logreg | svm | mlp | knn, or 'package.module:Class' / 'package.module.Class'."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise DependencyError("transfer learning needs scikit-learn: pip install 'knnclass[train]'") from None
    if spec == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(**{"C": 20.0, "max_iter": 2000, **params})
    if spec == "svm":
        from sklearn.svm import LinearSVC

        return LinearSVC(**{"C": 1.0, "random_state": seed, **params})
    if spec == "mlp":
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(**{"hidden_layer_sizes": (512,), "max_iter": 200, "random_state": seed, **params})
    if spec == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(**{"n_neighbors": 5, "metric": "cosine", "weights": "distance", **params})
    mod_name, _, cls_name = spec.replace(":", ".").rpartition(".")
    if not mod_name:
        raise InputError(f"--classifier must be {', '.join(CLASSIFIERS)} or an import path, not {spec!r}")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise InputError(f"--classifier {spec!r}: cannot import ({e})") from None
    try:
        return cls(**params)
    except TypeError as e:
        raise InputError(f"--classifier {spec!r}: bad parameters ({e})") from None


# --- the job ----------------------------------------------------------------------------------
def _require_torch() -> None:
    try:
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise DependencyError(
            f"fine-tuning needs the train extra ({e.name} is missing): pip install 'knnclass[train]'"
        ) from None


_EMBEDDINGS: dict[tuple[str, str], np.ndarray] = {}


def embed_cached(enc: Any, texts: Sequence[str]) -> np.ndarray:
    """`enc.embed(texts)`, remembered per (encoder identity, texts) within this process:
    a comparison embeds the same train set with the same encoder several times."""
    import hashlib

    key = (str(enc.identity), hashlib.sha256("\x1f".join(texts).encode()).hexdigest())
    if key not in _EMBEDDINGS:
        if len(_EMBEDDINGS) >= 8:
            _EMBEDDINGS.pop(next(iter(_EMBEDDINGS)))
        _EMBEDDINGS[key] = enc.embed(list(texts))
    return _EMBEDDINGS[key]


def _onnx_embedder(encoder_dir: Path | None) -> tuple[Callable[[list[str]], np.ndarray], str]:
    from ..encoders import default_model_dir, load_encoder

    if encoder_dir is not None and Path(encoder_dir).resolve() == default_model_dir().resolve():
        encoder_dir = None  # the default model: reuse its cached export
    enc = load_encoder(encoder_dir)
    return (lambda texts: embed_cached(enc, texts)), str(enc.source)


def _evaluate_embeddings(
    train_vecs: np.ndarray, train: TaskSet, val_vecs: np.ndarray, val: TaskSet, heads: dict[str, Head] | None
) -> dict[str, Any]:
    """Per task: kNN (rule tuned on validation) and head metrics on validation."""
    out: dict[str, Any] = {}
    for task in train.tasks:
        tuned = tune_knn(train_vecs, train.labels[task], val_vecs, val.labels[task])
        pred = knn_predict(train_vecs, train.labels[task], val_vecs, tuned.best.rule)
        res: dict[str, Any] = {"knn": {**_metrics(val.labels[task], pred), "rule": tuned.best.rule.to_dict()}}
        if heads and task in heads:
            hp, _ = heads[task].predict(val_vecs)
            res["head"] = {
                **_metrics(val.labels[task], hp),
                "loss": _head_loss(heads[task], val_vecs, val.labels[task]),
            }
        out[task] = res
    return out


def _head_loss(head: Head, vecs: np.ndarray, truth: Sequence[str]) -> float:
    """Mean cross-entropy of the head on labelled vectors (labels it does not know are skipped)."""
    col = {lab: i for i, lab in enumerate(head.labels)}
    rows = [(i, col[t]) for i, t in enumerate(truth) if t in col]
    if not rows:
        return float("nan")
    z = head.scores(vecs[[i for i, _ in rows]]).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return round(float(-np.mean(logp[np.arange(len(rows)), [c for _, c in rows]])), 5)


def _score(ev: dict[str, Any]) -> float:
    """Model selection: mean over tasks of the better of kNN and head accuracy."""
    return float(np.mean([max(r["knn"]["accuracy"], r.get("head", {}).get("accuracy", 0.0)) for r in ev.values()]))


def run_finetune(
    train: TaskSet,
    validation: TaskSet,
    settings: FinetuneSettings,
    out_dir: str | Path,
    base_model: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one strategy and write its run dir; returns run.json's content."""
    from ..encoders import default_model_dir
    from ..encoders.export import require_model_dir

    out = Path(out_dir)
    base = Path(base_model) if base_model else default_model_dir()
    require_model_dir(base)
    if (out / RUN_FILE).exists():
        raise InputError(f"{out}: already holds a run; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda s: None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    validation.write_csv(out / "validation.csv")
    t0 = time.perf_counter()
    if settings.strategy in ("full", "last-layer"):
        result = _train_encoder(train, validation, settings, out, base, log, progress)
    else:
        result = _frozen(train, validation, settings, out, base, log)
    result["timing"]["total_s"] = round(time.perf_counter() - t0, 2)
    run = {
        "format": 1,
        "strategy": settings.strategy,
        "settings": {**asdict(settings), "base_model": str(base)},
        "tasks": train.tasks,
        "n_train": len(train.texts),
        "n_validation": len(validation.texts),
        **result,
    }
    # The served rule: the head only where validation says it beats the kNN vote.
    primary = run["validation"][train.tasks[0]]
    run["serve"] = "head" if primary.get("head", {}).get("accuracy", -1) > primary["knn"]["accuracy"] else "knn"
    (out / RUN_FILE).write_text(json.dumps(run, indent=2, default=str))
    return run


def _frozen(
    train: TaskSet, val: TaskSet, s: FinetuneSettings, out: Path, base: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """transfer (classifier on frozen embeddings) and knn (no training): the served ONNX encoder."""
    t0 = time.perf_counter()
    embed, source = _onnx_embedder(base)
    train_vecs = embed(train.texts)
    val_vecs = embed(val.texts)
    t_embed = time.perf_counter() - t0
    heads: dict[str, Head] = {}
    t1 = time.perf_counter()
    extra: dict[str, Any] = {}
    if s.strategy == "transfer":
        import pickle

        for task in train.tasks:
            classes = sorted(set(train.labels[task]))
            if len(classes) < 2:  # nothing to learn: a constant head
                heads[task] = Head(
                    task, "linear", classes, [np.zeros((1, train_vecs.shape[1]), np.float32)], [np.zeros(1, np.float32)]
                )
                continue
            est = make_classifier(s.classifier, s.classifier_params, s.seed)
            est.fit(train_vecs, train.labels[task])
            head = Head.from_sklearn(task, est)
            if head is None:  # no numpy form: keep the estimator itself (needs scikit-learn to serve)
                (out / f"estimator-{task}.pkl").write_bytes(pickle.dumps(est))
                pred = [str(p) for p in est.predict(val_vecs)]
                extra.setdefault("estimator_validation", {})[task] = _metrics(val.labels[task], pred)
            else:
                heads[task] = head
        log(f"fitted {s.classifier} on {len(train.texts)} frozen embeddings in {time.perf_counter() - t1:.1f}s")
    t_fit = time.perf_counter() - t1
    ev = _evaluate_embeddings(train_vecs, train, val_vecs, val, heads)
    for task, m in extra.get("estimator_validation", {}).items():
        ev[task]["head"] = m
    if heads:
        save_heads(out / HEADS_FILE, list(heads.values()))
    forgetting = forgetting_figures(embed, general_vectors(embed))
    forgetting["paraphrase_accuracy_before"] = forgetting["paraphrase_accuracy"]
    return {
        "encoder": source,
        "encoder_tuned": False,
        "heads": HEADS_FILE if heads else None,
        "validation": ev,
        "history": [],
        "best_epoch": None,
        "forgetting": forgetting,
        "timing": {"embed_s": round(t_embed, 2), "train_s": round(t_fit, 2)},
    }


def _set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _train_encoder(
    train: TaskSet,
    val: TaskSet,
    s: FinetuneSettings,
    out: Path,
    base: Path,
    log: Callable[[str], None],
    progress: bool,
) -> dict[str, Any]:
    """full / last-layer: cosine-classifier heads (one per task) + cross-entropy, best epoch kept."""
    _require_torch()
    import sys

    import torch
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer
    from tqdm import tqdm
    from transformers import get_scheduler

    _set_seed(s.seed)
    if s.threads:
        torch.set_num_threads(s.threads)
    t_start = time.perf_counter()
    model = SentenceTransformer(str(base), device="cpu")
    serving_max_len = int(model.max_seq_length or s.max_seq_length)
    model.max_seq_length = min(s.max_seq_length, serving_max_len)  # training-time truncation only

    # Freeze: nothing (full) or every layer below the top one(s) (last-layer).
    frozen = 0
    if s.strategy == "last-layer":
        auto = model[0].auto_model
        layers = auto.encoder.layer
        frozen = len(layers) - 1 if s.freeze_layers is None else s.freeze_layers
        if not 0 <= frozen < len(layers):
            raise InputError(f"--freeze-layers must be in [0, {len(layers) - 1}], not {frozen}")
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

    # One cosine head per task, initialised at the normalised class means (nearest-centroid start).
    label_names = {t: sorted(set(train.labels[t])) for t in train.tasks}
    targets = {
        t: torch.tensor([label_names[t].index(lab) for lab in train.labels[t]], dtype=torch.long) for t in train.tasks
    }
    heads = torch.nn.ParameterDict()
    for t in train.tasks:
        means = np.stack([train_vecs[targets[t].numpy() == i].mean(axis=0) for i in range(len(label_names[t]))])
        heads[t.replace(".", "_")] = torch.nn.Parameter(torch.tensor(means, dtype=torch.float32))

    def numpy_heads() -> dict[str, Head]:
        return {
            t: Head(t, "cosine", label_names[t], [heads[t.replace(".", "_")].detach().numpy().copy()], scale=s.scale)
            for t in train.tasks
        }

    tokenize = getattr(model, "preprocess", None) or model.tokenize
    history: list[dict[str, Any]] = []
    ev0 = _evaluate_embeddings(train_vecs, train, val_vecs, val, numpy_heads())
    history.append({"epoch": 0, "validation": ev0, "score": _score(ev0)})
    log(f"epoch 0 (pretrained): {_fmt(ev0)}")

    enc_params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(
        [{"params": enc_params, "lr": s.lr}, {"params": list(heads.parameters()), "lr": s.head_lr}],
        weight_decay=0.01,
    )
    steps_per_epoch = math.ceil(len(train.texts) / s.batch_size)
    total = steps_per_epoch * s.epochs if s.max_steps is None else min(s.max_steps, steps_per_epoch * s.epochs)
    sched_name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[s.scheduler]
    sched = get_scheduler(sched_name, optim, num_warmup_steps=int(s.warmup * total), num_training_steps=total)
    rng = np.random.default_rng(s.seed)

    # The pretrained model is epoch 0: if no epoch beats it on validation, it is what is kept.
    best_score, best_epoch = float(history[0]["score"]), 0
    best_state = copy.deepcopy(model.state_dict())
    best_heads = {k: v.detach().clone() for k, v in heads.items()}
    step = 0
    losses: list[float] = []
    t_train = time.perf_counter()
    bar = tqdm(
        total=total, desc=f"{s.strategy} tuning", unit="step", file=sys.stderr, disable=not progress, mininterval=1.0
    )
    for epoch in range(1, s.epochs + 1):
        if step >= total:
            break
        model.train()
        order = rng.permutation(len(train.texts))
        for start in range(0, len(order), s.batch_size):
            if step >= total:
                break
            idx = order[start : start + s.batch_size]
            feats = tokenize([train.texts[i] for i in idx])
            emb = model(feats)["sentence_embedding"]
            emb = F.normalize(emb, dim=-1)
            loss = torch.zeros(())
            for t in train.tasks:
                w = F.normalize(heads[t.replace(".", "_")], dim=-1)
                logits = s.scale * emb @ w.T
                loss = loss + F.cross_entropy(logits, targets[t][idx], label_smoothing=s.label_smoothing)
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(enc_params + list(heads.parameters()), 1.0)
            optim.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.3f}")
        model.eval()
        train_vecs = encode(train.texts)
        val_vecs = encode(val.texts)
        ev = _evaluate_embeddings(train_vecs, train, val_vecs, val, numpy_heads())
        score = _score(ev)
        history.append(
            {
                "epoch": epoch,
                "steps": step,
                "train_loss": round(float(np.mean(losses[-steps_per_epoch:])), 5),
                "validation": ev,
                "score": score,
            }
        )
        log(f"epoch {epoch}: {_fmt(ev)}")
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
            best_heads = {k: v.detach().clone() for k, v in heads.items()}
    bar.close()
    train_s = time.perf_counter() - t_train
    model.load_state_dict(best_state)
    with torch.no_grad():
        for k, v in best_heads.items():
            heads[k].copy_(v)
    model.eval()
    final_heads = numpy_heads()
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
    timing: dict[str, Any] = {"train_s": round(train_s, 2), "steps": step, "torch_threads": torch.get_num_threads()}
    encoder_ref = str(st_dir)
    validation = next(h["validation"] for h in history if h["epoch"] == best_epoch)
    if s.export:
        from ..encoders.export import ExportSettings, export_encoder

        t_exp = time.perf_counter()
        meta = export_encoder(st_dir, out / "encoder", ExportSettings(), name=f"ft-{s.strategy}-{out.resolve().name}")
        timing["export_s"] = round(time.perf_counter() - t_exp, 2)
        encoder_ref = str((out / "encoder").resolve())
        # Re-score with the exported (served) encoder: what `promote` will serve.
        onnx_embed, _ = _onnx_embedder(out / "encoder")
        validation = _evaluate_embeddings(onnx_embed(train.texts), train, onnx_embed(val.texts), val, final_heads)
        timing["parity"] = meta.get("parity")
    timing["job_s"] = round(time.perf_counter() - t_start, 2)
    return {
        "encoder": encoder_ref,
        "encoder_st": str(st_dir.resolve()),
        "encoder_tuned": True,
        "frozen_layers": frozen,
        "trainable_params": sum(p.numel() for p in enc_params),
        "total_params": sum(p.numel() for p in model.parameters()),
        "heads": HEADS_FILE,
        "validation": validation,
        "validation_torch": next(h["validation"] for h in history if h["epoch"] == best_epoch),
        "history": history,
        "best_epoch": best_epoch,
        "forgetting": forgetting,
        "timing": timing,
    }


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


def _fmt(ev: dict[str, Any]) -> str:
    parts = []
    for task, r in ev.items():
        p = f"{task} knn={r['knn']['accuracy']:.4f}"
        if "head" in r:
            p += f" head={r['head']['accuracy']:.4f}"
        parts.append(p)
    return "; ".join(parts)


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """run.json of a run dir, with a clear error when it is not one."""
    p = Path(run_dir) / RUN_FILE
    if not p.exists():
        raise InputError(f"{run_dir}: not a knnclass run dir (no {RUN_FILE})")
    return dict(json.loads(p.read_text()))
