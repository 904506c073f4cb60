"""The settings of one fine-tuning run (recorded in run.json) and the names they accept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

__all__ = ["CLASSIFIERS", "DEVICES", "LOSSES", "STRATEGIES", "FinetuneSettings"]

STRATEGIES = ("full", "last-layer", "transfer", "knn", "contrastive")
CLASSIFIERS = ("logreg", "svm", "mlp", "knn")
DEVICES = ("auto", "cpu", "cuda")  # torch training devices; auto: cuda where torch sees one
# contrastive losses (see jobs.losses); the first is the default: on Banking77, three full epochs each
# (benchmarks/RESULTS.md), mnrl lifted validation kNN 92.5 -> 93.8 % and test 92.27 -> 92.66 %, while
# batch-all never beat the pretrained encoder on validation
LOSSES = ("mnrl", "batch-all", "supcon", "batch-hard-soft")


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
    scale: float = 20.0  # cosine-head logit scale; contrastive: 1 / temperature of supcon and mnrl
    label_smoothing: float = 0.0
    max_seq_length: int = 128
    max_steps: int | None = None
    classifier: str = "logreg"
    classifier_params: dict[str, Any] = field(default_factory=dict)
    export: bool = True
    threads: int | None = None  # torch CPU threads (None: torch's default); 1 is faster on a busy machine
    device: str = "auto"  # torch training device: cpu, cuda, or auto (cuda where torch sees one)
    # contrastive only
    loss: str = LOSSES[0]
    per_label: int = 2  # examples of one label in a batch (mnrl needs exactly 2: anchor and positive)
    hard_negatives: float = 0.5  # share of a batch's labels taken from the seed label's kNN confusions
    margin: float = 0.3  # batch-all: cosine-distance margin
    task_weight: float = 0.5  # weight of each label set after the first in the summed loss

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.scheduler not in ("linear", "cosine", "constant"):
            raise InputError(f"scheduler must be linear, cosine or constant, not {self.scheduler!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError("epochs and batch_size must be >= 1")
        if not 0 < self.lr < 1:
            raise InputError(f"lr must be in (0, 1), not {self.lr}")
        if not 0 <= self.warmup < 1:
            raise InputError(f"warmup is a fraction of the steps in [0, 1), not {self.warmup}")
        if self.device not in DEVICES:
            raise InputError(f"device must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, not {self.device!r}")
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.per_label < 2:
            raise InputError(f"per_label must be >= 2 (a positive per anchor), not {self.per_label}")
        if self.loss == "mnrl" and self.strategy == "contrastive" and self.per_label != 2:
            raise InputError("loss mnrl pairs an anchor with one positive: per_label must be 2")
        if self.strategy == "contrastive" and self.batch_size < 2 * self.per_label:
            raise InputError(f"batch_size must hold at least two labels ({2 * self.per_label} examples)")
        if not 0 <= self.hard_negatives <= 1:
            raise InputError(f"hard_negatives is a fraction in [0, 1], not {self.hard_negatives}")
