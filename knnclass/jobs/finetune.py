"""Encoder fine-tuning jobs: full, last-layer, contrastive, transfer (frozen encoder) and plain kNN.

The public entry; the pieces live by concept beside it:

    jobs/settings.py    FinetuneSettings and the accepted names
    jobs/tasks.py       label sets (tasks) and the stratified validation split
    jobs/validation.py  exact kNN scoring, rule tuning, head metrics, label confusions
    jobs/train.py       full / last-layer / contrastive on SentenceTransformerTrainer
    jobs/losses.py      the trainer's losses and label-grouped batch sampler (torch)
    jobs/transfer.py    transfer classifiers and the frozen kNN strategy
    jobs/forgetting.py  the general-skill check before and after tuning
    jobs/run.py         one job: the run dir and run.json

Every job writes a run dir::

    RUN/run.json          settings, tasks, validation metrics per epoch and final, timing,
                          forgetting check, what to serve
    RUN/encoder-st/       the tuned encoder, sentence-transformers format (full, last-layer, contrastive)
    RUN/encoder/          the same exported to ONNX through the spine's export + parity gate
    RUN/heads.npz         one numpy-servable head per label set (see jobs.head)
    RUN/validation.csv    the validation split (so `promote` can re-tune the vote rule)

torch and sentence-transformers are imported inside the training functions only:
serving never imports this module's heavy dependencies.
"""

from __future__ import annotations

from .forgetting import GENERAL_PAIRS, forgetting_figures, general_vectors
from .run import RUN_FILE, read_run, run_finetune
from .settings import CLASSIFIERS, LOSSES, STRATEGIES, FinetuneSettings
from .tasks import TaskSet, load_tasks, split_validation
from .transfer import make_classifier
from .validation import embed_cached, knn_hits, knn_predict, label_confusions, tune_knn

__all__ = [
    "CLASSIFIERS",
    "GENERAL_PAIRS",
    "LOSSES",
    "RUN_FILE",
    "STRATEGIES",
    "FinetuneSettings",
    "TaskSet",
    "embed_cached",
    "forgetting_figures",
    "general_vectors",
    "knn_hits",
    "knn_predict",
    "label_confusions",
    "load_tasks",
    "make_classifier",
    "read_run",
    "run_finetune",
    "split_validation",
    "tune_knn",
]
