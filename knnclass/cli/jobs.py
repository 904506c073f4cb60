"""finetune, compare, promote, rollback, prune."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import InputError
from ._common import (
    INPUT_FILE,
    ProgressBar,
    emit_json,
    open_classifier,
    store_options,
    text_source,
    text_source_options,
)

if TYPE_CHECKING:
    from ..data import TextSource

_STRATEGIES = ("full", "last-layer", "transfer", "knn", "contrastive")
_LOSSES = ("mnrl", "batch-all", "supcon", "batch-hard-soft")  # = jobs.settings.LOSSES (default first)
_DEVICES = ("auto", "cpu", "cuda")  # = jobs.settings.DEVICES (default first)


def _log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


def _label_maps(specs: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        p = Path(path if sep else name)
        if not p.is_file():
            raise InputError(f"--label-map {spec!r}: no such file")
        out[name if sep else p.stem] = p
    return out


def _data_options(f: Any) -> Any:
    """Options shared by finetune and compare: data, split and training settings."""
    opts = [
        click.option(
            "--validation",
            type=INPUT_FILE,
            default=None,
            help="Labelled validation file (default: carve --val-fraction).",
        ),
        click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0.01, 0.5)),
        text_source_options,
        click.option(
            "--label-col",
            "label_cols",
            multiple=True,
            default=("category",),
            show_default=True,
            help="Label column; repeat for multi-task tuning (one head per label set).",
        ),
        click.option(
            "--label-map",
            "label_maps",
            multiple=True,
            metavar="[NAME=]FILE",
            help="Extra task from a two-column mapping of the first label column (e.g. urgency=urgency.csv).",
        ),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run dir."),
        click.option(
            "--encoder",
            "base_model",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            default=None,
            help="Pretrained sentence-transformers dir (default all-MiniLM-L6-v2).",
        ),
        click.option("--epochs", default=3, show_default=True, type=click.IntRange(1, 100)),
        click.option(
            "--lr", default=2e-5, show_default=True, type=float, help="Encoder learning rate (keep small: 1e-5..5e-5)."
        ),
        click.option("--head-lr", default=1e-3, show_default=True, type=click.FloatRange(0, 1, min_open=True)),
        click.option(
            "--scheduler", default="linear", show_default=True, type=click.Choice(["linear", "cosine", "constant"])
        ),
        click.option(
            "--warmup", default=0.1, show_default=True, type=click.FloatRange(0, 0.99), help="Fraction of steps."
        ),
        click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096)),
        click.option(
            "--max-seq-length",
            default=128,
            show_default=True,
            type=click.IntRange(8, 512),
            help="Tokens per text while training (tickets longer than this are truncated).",
        ),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option(
            "--scale",
            default=20.0,
            show_default=True,
            type=click.FloatRange(0, 1000, min_open=True),
            help="Cosine-head logit scale.",
        ),
        click.option("--max-steps", default=None, type=click.IntRange(1), help="Stop after this many steps."),
        click.option(
            "--freeze-layers",
            default=None,
            type=click.IntRange(0),
            help="last-layer: layers frozen from the bottom (default: all but the last).",
        ),
        click.option(
            "--classifier",
            default="logreg",
            show_default=True,
            help="transfer: logreg|svm|mlp|knn or an import path (pkg.mod:Class).",
        ),
        click.option("--classifier-params", default="{}", help="transfer: JSON keyword arguments for the classifier."),
        click.option(
            "--threads", default=None, type=click.IntRange(1), help="torch CPU threads (1 is faster on a busy machine)."
        ),
        click.option(
            "--device",
            default=_DEVICES[0],
            show_default=True,
            type=click.Choice(_DEVICES),
            help="torch training device (auto: cuda where torch sees one).",
        ),
        click.option(
            "--loss",
            default=_LOSSES[0],
            show_default=True,
            type=click.Choice(_LOSSES),
            help="contrastive: MultipleNegativesRankingLoss over label pairs, batch-all / batch-hard "
            "soft-margin triplet, or supervised contrastive.",
        ),
        click.option(
            "--per-label",
            default=2,
            show_default=True,
            type=click.IntRange(2),
            help="contrastive: examples of one label per batch (mnrl: 2).",
        ),
        click.option(
            "--hard-negatives",
            default=0.5,
            show_default=True,
            type=click.FloatRange(0, 1),
            help="contrastive: share of a batch's labels drawn from the kNN confusions of its seed label.",
        ),
        click.option(
            "--margin", default=0.3, show_default=True, type=click.FloatRange(0, 2), help="batch-all: cosine margin."
        ),
        click.option(
            "--task-weight",
            default=0.5,
            show_default=True,
            type=click.FloatRange(0),
            help="contrastive: loss weight of each label set after the first.",
        ),
        click.option(
            "--no-export", is_flag=True, help="Skip the ONNX export of a tuned encoder (promote exports later)."
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _text(kw: dict[str, Any]) -> TextSource:
    """The composition --text-col / --text-template ask for (popped from `kw`)."""
    return text_source(kw.pop("text_cols"), kw.pop("text_template"))


def _prepare(train_path: Path, kw: dict[str, Any]) -> tuple[Any, Any, Any]:
    from ..jobs.finetune import FinetuneSettings, load_tasks, split_validation

    maps = _label_maps(kw.pop("label_maps"))
    cols = kw.pop("label_cols")
    src = _text(kw)
    delimiter = kw.pop("delimiter")
    data = load_tasks(train_path, src, cols, maps, delimiter)
    validation = kw.pop("validation")
    fraction = kw.pop("val_fraction")
    if validation is not None:
        train, val = data, load_tasks(validation, src, cols, maps, delimiter)
    else:
        train, val = split_validation(data, fraction, kw["seed"])
    try:
        params = json.loads(kw.pop("classifier_params"))
    except json.JSONDecodeError as e:
        raise InputError(f"--classifier-params is not valid JSON: {e}") from None
    if not isinstance(params, dict):
        raise InputError("--classifier-params must be a JSON object")
    settings = FinetuneSettings(
        epochs=kw.pop("epochs"),
        lr=kw.pop("lr"),
        head_lr=kw.pop("head_lr"),
        scheduler=kw.pop("scheduler"),
        warmup=kw.pop("warmup"),
        batch_size=kw.pop("batch_size"),
        max_seq_length=kw.pop("max_seq_length"),
        seed=kw.pop("seed"),
        scale=kw.pop("scale"),
        max_steps=kw.pop("max_steps"),
        freeze_layers=kw.pop("freeze_layers"),
        classifier=kw.pop("classifier"),
        classifier_params=params,
        export=not kw.pop("no_export"),
        threads=kw.pop("threads"),
        device=kw.pop("device"),
        loss=kw.pop("loss"),
        per_label=kw.pop("per_label"),
        hard_negatives=kw.pop("hard_negatives"),
        margin=kw.pop("margin"),
        task_weight=kw.pop("task_weight"),
    )
    return train, val, settings


@click.command()
@click.argument("train", type=INPUT_FILE)
@click.option("--strategy", type=click.Choice(_STRATEGIES), default="full", show_default=True)
@_data_options
@click.option("--json", "as_json", is_flag=True, help="Print run.json.")
def finetune(train: Path, strategy: str, as_json: bool, **kw: Any) -> None:
    """Tune an encoder (full | last-layer: cosine heads; contrastive: same-label tickets near, others
    far), fit a classifier on frozen embeddings (transfer), or tune the kNN vote only (knn);
    writes a run dir with the encoder, head and metrics."""
    from dataclasses import replace

    from ..jobs.finetune import run_finetune

    out = kw.pop("out") or Path("runs") / f"{strategy}-{time.strftime('%Y%m%d-%H%M%S')}"
    base_model = kw.pop("base_model")
    tr, val, settings = _prepare(train, kw)
    run = run_finetune(tr, val, replace(settings, strategy=strategy), out, base_model=base_model, log=_log)
    if as_json:
        emit_json(run)
        return
    for task, r in run["validation"].items():
        line = f"{task}: kNN accuracy {r['knn']['accuracy']:.4f} macro-F1 {r['knn']['macro_f1']:.4f}"
        if "head" in r:
            line += f"; head accuracy {r['head']['accuracy']:.4f} macro-F1 {r['head']['macro_f1']:.4f}"
        click.echo(line)
    f = run["forgetting"]
    click.echo(
        f"general skill: paraphrase retrieval {f['paraphrase_accuracy_before']:.3f} -> {f['paraphrase_accuracy']:.3f}, "
        f"neighbour agreement with the original {f.get('neighbour_agreement', 1.0):.3f}"
    )
    click.echo(f"best epoch {run['best_epoch']}; serve {run['serve']}; {run['timing']['total_s']:.0f}s; run dir {out}")


@click.command()
@click.argument("train", type=INPUT_FILE)
@click.option("--strategies", default="all", show_default=True, help="Comma-separated, or 'all'.")
@click.option(
    "--test", type=INPUT_FILE, default=None, help="Score once on this labelled file after all choices are made."
)
@_data_options
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(train: Path, strategies: str, test: Path | None, as_json: bool, **kw: Any) -> None:
    """Run the strategies (and kNN over each tuned encoder) and rank them; writes report.md + chart.png."""
    from ..jobs.compare import compare as run_compare
    from ..jobs.compare import markdown_table
    from ..jobs.finetune import load_tasks

    chosen = list(_STRATEGIES) if strategies == "all" else [s.strip() for s in strategies.split(",") if s.strip()]
    out = kw.pop("out") or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    base_model = kw.pop("base_model")
    maps = _label_maps(kw["label_maps"])
    cols, src, delimiter = kw["label_cols"], _text(dict(kw)), kw["delimiter"]
    tr, val, settings = _prepare(train, kw)
    test_set = load_tasks(test, src, cols, maps, delimiter) if test else None
    report = run_compare(tr, val, out, chosen, settings, test=test_set, base_model=base_model, log=_log)
    if as_json:
        emit_json(report)
        return
    click.echo(markdown_table(report))
    click.echo(f"report: {out / 'report.md'}")


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--rule",
    "served",
    type=click.Choice(["auto", "knn", "head", "ensemble"]),
    default="auto",
    show_default=True,
    help="Serve the kNN vote, the run's head, or an ensemble (the head's probabilities blended with "
    "the vote's shares, the head's share chosen on validation); auto: whichever validation scores best.",
)
@click.option("--json", "as_json", is_flag=True)
@store_options
def promote(run_dir: Path, batch_size: int, served: str, as_json: bool, **so: Any) -> None:
    """Reindex the collection with RUN_DIR's encoder into a new version, re-tune, switch atomically."""
    from ..jobs.reindex import promote as do_promote

    clf = open_classifier(create=False, **so)
    with clf.store:
        total = clf.store.count(clf.ref())
        with ProgressBar(total, "reindexing") as bar:
            res = do_promote(
                clf.store,
                so["collection"],
                run_dir,
                batch_size=batch_size,
                progress=bar.update,
                serve=served,
            )
    if as_json:
        emit_json(res)
        return
    head = res["head"]
    served = head["served"] if head else "knn"
    rule = {"knn": "kNN vote", "head": "head"}.get(served) or f"ensemble (head share {head['head_share']:g})"
    click.echo(
        f"promoted {res['collection']}: {res['from']} -> {res['to']} ({res['count']} examples, {res['seconds']}s)"
    )
    click.echo(
        f"serving {rule}; vote rule {res['rule']} (tuned: {res['tuning']['mode']}, score {res['tuning']['best']['score']:.4f})"
    )
    for name, t in list(res["label_sets"].items())[1:]:
        b = t["best"]
        click.echo(f"label set {name}: {b['vote']} vote of k={b['k']} (tuned: {t['mode']}, score {b['score']:.4f})")


@click.command()
@store_options
def rollback(**so: Any) -> None:
    """Switch the collection back to its previous version (kept until `prune`)."""
    from ..jobs.reindex import rollback as do_rollback

    clf = open_classifier(create=False, **so)
    with clf.store:
        res = do_rollback(clf.store, so["collection"])
    click.echo(f"rolled back {res['collection']}: {res['from']} -> {res['to']}")


@click.command()
@click.option(
    "--keep", default=0, show_default=True, type=click.IntRange(0), help="Also keep this many newest other versions."
)
@store_options
def prune(keep: int, **so: Any) -> None:
    """Drop the collection's old versions (all but the current one and --keep others)."""
    from ..jobs.reindex import prune as do_prune

    clf = open_classifier(create=False, **so)
    with clf.store:
        res = do_prune(clf.store, so["collection"], keep)
    click.echo(f"{res['collection']}: current {res['current']}; dropped {', '.join(res['dropped']) or 'nothing'}")


COMMANDS: list[click.Command] = [finetune, compare, promote, rollback, prune]
