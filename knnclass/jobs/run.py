"""One fine-tuning job: run a strategy, write its run dir and run.json."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import InputError
from .settings import FinetuneSettings
from .tasks import TaskSet

__all__ = ["RUN_FILE", "read_run", "run_finetune"]

RUN_FILE = "run.json"


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
        raise InputError(f"{out}: already holds a run; choose another output dir")
    from .train import TUNED, torch_device

    if settings.strategy in TUNED:
        torch_device(settings.device)  # a missing GPU is refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda s: None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    validation.write_csv(out / "validation.csv")
    t0 = time.perf_counter()
    if settings.strategy in TUNED:
        from .train import train_encoder

        result = train_encoder(train, validation, settings, out, base, log, progress)
    else:
        from .transfer import run_frozen

        result = run_frozen(train, validation, settings, out, base, log)
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
    # The served rule: the head or the ensemble only where validation says it beats the kNN vote.
    primary = run["validation"][train.tasks[0]]
    run["serve"] = max(
        ("knn", "head", "ensemble"), key=lambda kind: (primary.get(kind, {}).get("accuracy", -1), kind == "knn")
    )
    (out / RUN_FILE).write_text(json.dumps(run, indent=2, default=str))
    return run


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """run.json of a run dir, with a clear error when it is not one."""
    p = Path(run_dir) / RUN_FILE
    if not p.exists():
        raise InputError(f"{run_dir}: not a knnclass run dir (no {RUN_FILE})")
    return dict(json.loads(p.read_text()))
