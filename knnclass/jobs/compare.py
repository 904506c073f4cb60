"""Run the strategies side by side and rank them: `knnclass compare`.

Each strategy gets its own run dir under OUT; every tuned encoder is also scored as a
kNN classifier (its neighbours with the vote rule tuned on validation). The ranking is by
validation accuracy; a test file, when given, is scored once at the end with the served
(ONNX) encoder and the choices validation made.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..metrics import score_predictions
from ..voting import Rule
from .finetune import STRATEGIES, FinetuneSettings, TaskSet, embed_cached, knn_predict, run_finetune
from .head import load_heads
from .validation import ensemble_predict

__all__ = ["compare", "markdown_table", "write_report"]


def _encoder_for(run: dict[str, Any], run_dir: Path) -> Any:
    from ..encoders import load_encoder

    if run.get("encoder_tuned"):
        from .reindex import run_encoder_dir

        return load_encoder(run_encoder_dir(run_dir))
    return load_encoder(run["encoder"])


def _latency_ms(
    embed: Callable[[list[str]], np.ndarray], predict: Callable[[np.ndarray], Any], texts: list[str]
) -> float:
    """Median wall time to classify one ticket on its own (encode + decide)."""
    times = []
    for t in texts:
        t0 = time.perf_counter()
        predict(embed([t]))
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1000, 2)


def _rows_for(
    name: str, run: dict[str, Any], run_dir: Path, train: TaskSet, test: TaskSet | None, latency_texts: list[str]
) -> list[dict[str, Any]]:
    """One row per classifier a run offers: kNN over its encoder, and its head if any."""
    primary = run["tasks"][0]
    enc = _encoder_for(run, run_dir)
    heads = load_heads(run_dir / run["heads"]) if run.get("heads") else {}
    train_vecs = embed_cached(enc, train.texts)
    test_vecs = embed_cached(enc, test.texts) if test is not None else None
    # A transfer run's kNN row would repeat the frozen knn strategy's: show its head only.
    kinds = ([] if run["strategy"] == "transfer" and primary in heads else ["knn"]) + (
        ["head"] + (["ensemble"] if "ensemble" in run["validation"][primary] else []) if primary in heads else []
    )
    rows = []
    for kind in kinds:
        val = run["validation"][primary][kind]
        label = {"knn": "kNN vote", "head": "head", "ensemble": "ensemble (head + kNN vote)"}[kind]
        if run["strategy"] == "transfer" and kind == "head":
            label = f"{run['settings']['classifier']} head"
        elif kind == "head" and run.get("head_kind") == "centroid":
            label = "centroid head"
        row: dict[str, Any] = {
            "name": f"{name}: {label}" if name != "knn" else "knn: kNN vote (frozen)",
            "strategy": run["strategy"],
            "classifier": kind,
            "val_accuracy": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
            "train_s": run["timing"].get("total_s"),
            "best_epoch": run.get("best_epoch"),
            "forgetting": run.get("forgetting"),
            "run_dir": str(run_dir),
            "tasks": {},
        }
        rules = {
            t: Rule.from_dict(run["validation"][t][kind if kind == "ensemble" else "knn"]["rule"])
            for t in run["tasks"]
            if kind != "ensemble" or "ensemble" in run["validation"][t]
        }

        def predict(vecs: np.ndarray, task: str, kind: str = kind, rules: dict[str, Rule] = rules) -> list[str | None]:
            if kind == "head":
                return list(heads[task].predict(vecs)[0])
            if kind == "ensemble":
                return list(ensemble_predict(train_vecs, train.labels[task], vecs, rules[task], heads[task]))
            return knn_predict(train_vecs, train.labels[task], vecs, rules[task])

        row["latency_ms"] = _latency_ms(enc.embed, lambda v: predict(v, primary), latency_texts)
        for task in run["tasks"]:
            vt = run["validation"][task].get(kind)
            entry: dict[str, Any] = {"val_accuracy": vt["accuracy"], "val_macro_f1": vt["macro_f1"]} if vt else {}
            if test is not None and test_vecs is not None and (kind == "knn" or (task in rules and task in heads)):
                m = score_predictions(test.labels[task], predict(test_vecs, task))
                entry.update(test_accuracy=round(m["accuracy"], 5), test_macro_f1=round(m["macro_f1"], 5))
            row["tasks"][task] = entry
        if test is not None:
            row["test_accuracy"] = row["tasks"][primary].get("test_accuracy")
            row["test_macro_f1"] = row["tasks"][primary].get("test_macro_f1")
        rows.append(row)
    return rows


def compare(
    train: TaskSet,
    validation: TaskSet,
    out_dir: str | Path,
    strategies: Sequence[str] = STRATEGIES,
    base: FinetuneSettings | None = None,
    per_strategy: dict[str, dict[str, Any]] | None = None,
    test: TaskSet | None = None,
    base_model: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run `strategies` (each with `base` settings plus its overrides), rank, write the report."""
    log = log or (lambda s: None)
    out = Path(out_dir)
    if not strategies:
        raise InputError(f"no strategy given; choose from {', '.join(STRATEGIES)}")
    for s in strategies:
        if s not in STRATEGIES:
            raise InputError(f"unknown strategy {s!r}; choose from {', '.join(STRATEGIES)}")
    out.mkdir(parents=True, exist_ok=True)
    base = base or FinetuneSettings()
    latency_texts = validation.texts[:40]
    rows: list[dict[str, Any]] = []
    runs: dict[str, Any] = {}
    t0 = time.perf_counter()
    for s in strategies:
        settings = replace(base, strategy=s, **(per_strategy or {}).get(s, {}))
        run_dir = out / s
        log(f"== {s} ==")
        run = run_finetune(train, validation, settings, run_dir, base_model=base_model, log=log, progress=progress)
        runs[s] = {"validation": run["validation"], "timing": run["timing"], "forgetting": run["forgetting"]}
        rows.extend(_rows_for(s, run, run_dir, train, test, latency_texts))
        partial = _report(rows, train, validation, test, time.perf_counter() - t0)
        (out / "compare.partial.json").write_text(json.dumps(partial, indent=2, default=str))
    report = _report(rows, train, validation, test, time.perf_counter() - t0)
    (out / "compare.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "compare.partial.json").unlink(missing_ok=True)
    write_report(report, out)
    return report


def _report(
    rows: list[dict[str, Any]], train: TaskSet, validation: TaskSet, test: TaskSet | None, seconds: float
) -> dict[str, Any]:
    rows = sorted(rows, key=lambda r: (-r["val_accuracy"], -r["val_macro_f1"]))
    return {
        "primary_task": train.tasks[0],
        "tasks": train.tasks,
        "n_train": len(train.texts),
        "n_validation": len(validation.texts),
        "n_test": len(test.texts) if test is not None else None,
        "ranking": rows,
        "best": rows[0]["name"] if rows else None,
        "total_s": round(seconds, 1),
    }


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.2f}" if pct else f"{v:g}"


def markdown_table(report: dict[str, Any]) -> str:
    """The ranked table (validation first; test columns when a test set was scored)."""
    test = report.get("n_test") is not None
    head = "| rank | strategy: classifier | val acc % | val macro-F1 % |"
    sep = "|---:|---|---:|---:|"
    if test:
        head += " test acc % | test macro-F1 % |"
        sep += "---:|---:|"
    extra_tasks = report["tasks"][1:]
    for t in extra_tasks:
        head += f" {t} test macro-F1 % |" if test else f" {t} val macro-F1 % |"
        sep += "---:|"
    head += " train s | classify ms | retained paraphrase (before→after) | neighbour agreement |"
    sep += "---:|---:|---:|---:|"
    lines = [head, sep]
    for i, r in enumerate(report["ranking"], 1):
        line = f"| {i} | {r['name']} | {_fmt(r['val_accuracy'])} | {_fmt(r['val_macro_f1'])} |"
        if test:
            line += f" {_fmt(r.get('test_accuracy'))} | {_fmt(r.get('test_macro_f1'))} |"
        for t in extra_tasks:
            e = r["tasks"].get(t, {})
            line += f" {_fmt(e.get('test_macro_f1') if test else e.get('val_macro_f1'))} |"
        f = r.get("forgetting") or {}
        para = f"{_fmt(f.get('paraphrase_accuracy_before'))}→{_fmt(f.get('paraphrase_accuracy'))}"
        line += f" {r['train_s']:.0f} | {r['latency_ms']:.1f} | {para} | {_fmt(f.get('neighbour_agreement'))} |"
        lines.append(line)
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path) -> None:
    """report.md and a PNG bar chart (accuracy per strategy) in `out`."""
    lines = [
        "# Strategy comparison",
        "",
        f"Primary task `{report['primary_task']}`; {report['n_train']} train, {report['n_validation']} validation"
        + (
            f", {report['n_test']} test (scored once, after all choices were made on validation)"
            if report.get("n_test")
            else ""
        )
        + ".",
        "",
        markdown_table(report),
        "",
        "- *classify ms*: median time to classify one ticket alone (ONNX encode + vote or head), this machine.",
        "- *retained paraphrase*: nearest-neighbour paraphrase retrieval on general (non-banking) sentences, "
        "before → after tuning; *neighbour agreement*: overlap of each such sentence's top-5 neighbours "
        "with the original model's (1.0 = unchanged).",
        f"- total wall time {report['total_s']:.0f} s.",
        "",
        "![accuracy](chart.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = report["ranking"]
    names = [r["name"] for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    ax.barh(y - 0.2, [100 * r["val_accuracy"] for r in rows], 0.4, label="validation")
    if report.get("n_test"):
        ax.barh(y + 0.2, [100 * (r.get("test_accuracy") or 0) for r in rows], 0.4, label="test")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    lo = min(100 * r["val_accuracy"] for r in rows) if rows else 0
    ax.set_xlim(max(0, lo - 5), 100)
    ax.set_xlabel("accuracy %")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "chart.png", dpi=100)
    plt.close(fig)
