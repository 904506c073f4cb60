"""index, tune, evaluate, classify, info."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ..cleaning import CLEAN_MODES
from ..data import ReadStats, TextSource, is_blank, is_utf8, read_examples, read_table, read_texts, write_table
from ..encoders.base import LONG_TEXT_STRATEGIES
from ..errors import InputError
from ..store.base import CollectionMeta
from ..text import TextSettings
from ..tuning import Objective
from ..voting import Rule
from ._common import (
    INPUT_FILE,
    ProgressBar,
    emit_json,
    encoder_option,
    open_classifier,
    store_options,
    text_source,
    text_source_options,
)
from ._labels import (
    label_cols_option,
    label_maps_option,
    meta_col_option,
    parse_label_maps,
    parse_where,
    where_option,
)


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the option was set on the command line or by its environment variable."""
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _with_unknown(mapping: dict[str, str] | None, unknown_label: str | None) -> dict[str, str] | None:
    """A label map that lets the out-of-scope label through unchanged."""
    if mapping is not None and unknown_label is not None:
        return {**mapping, unknown_label: unknown_label}
    return mapping


@click.command()
@click.argument("tickets", type=INPUT_FILE)
@text_source_options
@label_cols_option
@click.option("--id-col", default=None, help="Column holding a stable id (default: a hash of the text).")
@label_maps_option
@meta_col_option
@encoder_option
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--shard",
    "shard",
    default=None,
    metavar="I/N",
    help="Index only shard I of N: every N-th block of 256 rows, from block I "
    "(e.g. $(JOB_COMPLETION_INDEX)/4 in an Indexed Job; every shard must use the same N).",
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where acknowledged batches are recorded for resuming (default: STORE/checkpoints, "
    "or ./knnclass-checkpoints with --qdrant-url).",
)
@click.option(
    "--wait-collection",
    default=300,
    show_default=True,
    type=click.IntRange(0, 86_400),
    help="Seconds a shard other than 0 waits for shard 0 to create the collection.",
)
@click.option(
    "--clean",
    type=click.Choice(CLEAN_MODES),
    default=None,
    help="How a new collection cleans tickets before embedding (default email: HTML, quoted replies, "
    "signatures, disclaimers removed); stored text stays as given. An existing collection keeps its own.",
)
@click.option(
    "--long-text",
    type=click.Choice(LONG_TEXT_STRATEGIES),
    default=None,
    help="What a new collection does with texts past the encoder's token limit (default head).",
)
@store_options
def index(
    tickets: Path,
    text_cols: tuple[str, ...],
    text_template: str | None,
    delimiter: str | None,
    label_cols: tuple[str, ...],
    id_col: str | None,
    label_maps: tuple[str, ...],
    meta_cols: tuple[str, ...],
    encoder_dir: Path | None,
    batch_size: int,
    shard: str | None,
    checkpoint_dir: Path | None,
    wait_collection: int,
    clean: str | None,
    long_text: str | None,
    **so: Any,
) -> None:
    """Bulk-index labelled TICKETS (CSV or JSONL). Re-running the same file is idempotent.

    With --shard I/N only a deterministic 1/N of the file is indexed; acknowledged batches
    are checkpointed, so a crashed run resumes where it stopped.
    """
    import time

    from ..jobs.shard import Checkpoint, parse_shard, select_shard

    spec = parse_shard(shard or "0/1")
    stamp = _peek_meta(so)
    settings = _text_settings(_stamped_text(stamp), clean, long_text, text_cols, text_template)
    names = _label_cols(label_cols, stamp)
    maps = parse_label_maps(label_maps, names)
    stats = ReadStats()  # the whole file is checked before the store is opened for writing
    rows = read_examples(
        tickets, settings.source(), names, id_col, None, stats, delimiter, meta_cols=meta_cols, label_maps=maps
    )
    examples = select_shard(rows, spec)
    clf = open_classifier(encoder_dir=encoder_dir, create=True, **so)
    default_dir = Path("knnclass-checkpoints") if so.get("qdrant_url") else so["store"] / "checkpoints"
    ckpt = Checkpoint(checkpoint_dir or default_dir, tickets, spec, so["collection"], batch_size)
    total = -(-len(examples) // batch_size)
    with clf.store:
        create = spec.index == 0
        deadline = time.monotonic() + wait_collection
        while not create and not clf.exists() and time.monotonic() < deadline:
            time.sleep(2)  # shard 0 creates the collection; the others wait for it
        skip = ckpt.done_batches() if shard else 0
        with ProgressBar(len(examples), f"indexing {spec}" if shard else "indexing") as bar:
            ref = clf.index(
                examples,
                batch_size=batch_size,
                progress=bar.update,
                skip_batches=skip,
                on_batch=(lambda k: ckpt.record(k, total)) if shard else None,
                create=create,
                text=settings,
                label_sets=names,
            )
        count = clf.store.count(ref)
        schema = clf.meta(ref).payload_schema or {}
    click.echo(f"read {tickets.name}: {stats.describe()}")
    if len(names) > 1:
        have = {n: sum(n in e.labels for e in examples) for n in names[1:]}
        click.echo(
            "label sets: " + ", ".join([f"{names[0]} (primary)", *(f"{n} ({c} labelled)" for n, c in have.items())])
        )
    if schema:
        click.echo("metadata: " + ", ".join(f"{k} ({v})" for k, v in schema.items()))
    if shard:
        click.echo(f"shard {spec}: {len(examples)} examples ({skip} batches resumed from checkpoint)")
    click.echo(f"indexed {len(examples)} examples into {ref.name} ({ref.version}); collection holds {count}")


def _peek_stamp(so: dict[str, Any]) -> TextSettings | None:
    """The existing collection's text settings, read without creating anything."""
    return _stamped_text(_peek_meta(so))


def _peek_meta(so: dict[str, Any]) -> CollectionMeta | None:
    """The existing collection's current meta, read without creating anything."""
    if not (so.get("qdrant_url") or Path(so["store"]).exists()):
        return None
    clf = open_classifier(create=False, **so)
    with clf.store:
        return clf.meta() if clf.exists() else None


def _stamped_text(meta: CollectionMeta | None) -> TextSettings | None:
    return TextSettings.from_meta(meta.text) if meta else None


def _stamped_source(meta: CollectionMeta | None) -> TextSource | None:
    return TextSettings.from_meta(meta.text).source() if meta else None


def _label_cols(given: tuple[str, ...], meta: CollectionMeta | None) -> list[str]:
    """The label columns to read: as given, else the collection's label sets, else 'category'."""
    if given:
        return list(given)
    return list(meta.label_sets) if meta is not None and meta.label_sets else ["category"]


def _text_settings(
    stamped: TextSettings | None,
    clean: str | None,
    long_text: str | None,
    text_cols: tuple[str, ...],
    template: str | None,
) -> TextSettings:
    """The collection's text settings (`stamped`) with what the command line changes (index refuses a change)."""
    stamped = stamped or TextSettings()
    src = text_source(text_cols, template, stamped.source())
    return TextSettings(clean or stamped.clean, long_text or stamped.long, src.fields, src.template)


def _stamped(clf: Any) -> TextSettings | None:
    """The text settings of the collection's current version, if it exists."""
    return TextSettings.from_meta(clf.meta().text) if clf.exists() else None


def _source_for(so: dict[str, Any], text_cols: tuple[str, ...], template: str | None) -> TextSource:
    """The columns to read: as given, else as the collection was indexed."""
    if text_cols or template:
        return text_source(text_cols, template)
    stamped = _peek_stamp(so)
    return stamped.source() if stamped else TextSource()


@click.command()
@click.option("--validation", type=INPUT_FILE, default=None, help="Labelled CSV to tune on (default: leave-one-out).")
@click.option("--unknown-label", default=None, help="Validation label meaning 'out of scope': must be abstained on.")
@text_source_options
@label_cols_option
@label_maps_option
@click.option("--id-col", default=None, help="Column holding each row's id (validation rows sharing one collapse).")
@where_option
@click.option(
    "--target-accuracy",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Operating point: answered tickets reach this accuracy on validation, coverage maximised.",
)
@click.option(
    "--target-unknown-recall",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Operating point: abstain on at least this share of unknown rows (needs --unknown-label).",
)
@click.option(
    "--target-confidence",
    type=click.FloatRange(0.5, 1, max_open=True),
    default=0.9,
    show_default=True,
    help="A target counts as reached where this one-sided lower bound of the validation figure reaches it "
    "(0.5: the figure itself), so it holds on new tickets too.",
)
@click.option(
    "--unknown-weight",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="With unknown rows, maximise (1 - W) x in-scope accuracy + W x unknown recall instead of the "
    "default (unknown recall >= 0.75 on its lower bound, in-scope accuracy maximised); 0.5 weighs both "
    "kinds of error alike, less favours in-scope accuracy.",
)
@click.option(
    "--unknown-rate",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.01,
    show_default=True,
    help="Without unknown rows: the share of in-scope tickets the novelty floor may flag as unknown.",
)
@click.option(
    "--long-text",
    type=click.Choice(["auto", *LONG_TEXT_STRATEGIES]),
    default=None,
    help="Long-text strategy for incoming tickets; auto: the best on --validation.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@store_options
def tune(
    validation: Path | None,
    unknown_label: str | None,
    text_cols: tuple[str, ...],
    text_template: str | None,
    delimiter: str | None,
    label_cols: tuple[str, ...],
    label_maps: tuple[str, ...],
    id_col: str | None,
    where: tuple[str, ...],
    target_accuracy: float | None,
    target_unknown_recall: float | None,
    target_confidence: float,
    unknown_weight: float | None,
    unknown_rate: float,
    long_text: str | None,
    as_json: bool,
    **so: Any,
) -> None:
    """Choose the vote rule, calibrate its confidence and set the abstain thresholds.

    Prints the candidate rules, then the coverage / accuracy / unknown-recall trade-off
    around the chosen operating point.
    """
    if validation is None:
        ctx = click.get_current_context()
        names = ("text_cols", "text_template", "delimiter", "label_cols", "label_maps")
        given = [f"--{n.replace('_', '-').rstrip('s')}" for n in names if _given(ctx, n)]
        if given:
            raise InputError(
                f"{', '.join(given)} describe the --validation file; without one, tune uses the stored labels"
            )
    val = None
    if validation:
        stamp = _peek_meta(so)
        cols = _label_cols(label_cols, stamp)
        maps = parse_label_maps(label_maps, cols)
        maps[cols[0]] = _with_unknown(maps.get(cols[0]), unknown_label) or {}
        if not maps[cols[0]]:
            del maps[cols[0]]
        src = text_source(text_cols, text_template, _stamped_source(stamp))
        val = read_examples(validation, src, cols, id_col, None, delimiter=delimiter, label_maps=maps)
    clf = open_classifier(create=False, **so)
    objective = Objective(target_accuracy, target_unknown_recall, unknown_weight, unknown_rate, target_confidence)
    with clf.store:
        long_scores = clf.set_long_text(val, long_text) if long_text else {}
        results = clf.tune_all(val, unknown_label, objective, parse_where(where))
    primary, *extra = results
    result = results[primary]
    if long_scores and not as_json:
        best = max(long_scores, key=lambda k: long_scores[k])
        click.echo("long texts: " + ", ".join(f"{k} {v:.4f}" for k, v in long_scores.items()) + f" -> {best}")
    ranked = sorted(result.candidates, key=lambda c: -c.score)
    if as_json:
        emit_json(
            {
                **result.summary(),
                "long_text": long_scores,
                "tradeoff": result.tradeoff,
                "candidates": [c.to_dict() for c in ranked],
                "label_sets": {name: r.summary() for name, r in results.items()},
            }
        )
        return
    click.echo(f"tuned on {result.n} examples ({result.mode}); {len(ranked)} candidates")
    click.echo(f"{'vote':<9} {'size':<10} {'k':>4} {'accuracy':>8} {'macro_f1':>8}")
    for c in ranked:
        size = f"k={int(c.rule.value)}" if c.rule.size == "k" else f"{c.rule.value:g}%"
        mark = "  <- chosen" if c.rule == replace(result.best.rule, threshold=0.0, novelty=None) else ""
        click.echo(f"{c.rule.vote:<9} {size:<10} {c.k:>4} {c.score:>8.4f} {c.macro_f1:>8.4f}{mark}")
    if result.tradeoff:
        click.echo(f"operating point ({result.point['objective']}):")
        click.echo(
            f"  {'threshold':>9} {'coverage':>8} {'answered_acc':>12} {'in_scope_acc':>12} {'unknown_recall':>14}"
        )
        for row in result.tradeoff:
            recall = f"{row['unknown_recall']:>14.4f}" if "unknown_recall" in row else f"{'-':>14}"
            click.echo(
                f"  {row['threshold']:>9.4f} {row['coverage']:>8.4f} {row['answered_accuracy']:>12.4f} "
                f"{row['in_scope_accuracy']:>12.4f} {recall}{'  <- chosen' if row['chosen'] else ''}"
            )
        if not result.point.get("target_met", True):
            click.echo("warning: the target is not reachable on this validation data; closest point chosen", err=True)
    click.echo(f"chosen: {result.best.rule.describe()} (accuracy of guesses {result.best.score:.4f})")
    for name in extra:
        r = results[name]
        click.echo(f"label set {name}: {r.best.rule.describe()} (accuracy of guesses {r.best.score:.4f}, n={r.n})")


@click.command()
@click.argument("test", type=INPUT_FILE)
@click.option("--unknown-label", default=None, help="Test label meaning 'out of scope'.")
@text_source_options
@label_cols_option
@label_maps_option
@click.option("--id-col", default=None, help="Column holding each row's id (rows sharing one collapse).")
@where_option
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@store_options
def evaluate(
    test: Path,
    unknown_label: str | None,
    text_cols: tuple[str, ...],
    text_template: str | None,
    delimiter: str | None,
    label_cols: tuple[str, ...],
    label_maps: tuple[str, ...],
    id_col: str | None,
    where: tuple[str, ...],
    as_json: bool,
    **so: Any,
) -> None:
    """Score the tuned rules on a labelled TEST file (every label set it has a column for)."""
    stamp = _peek_meta(so)
    names = _label_cols(label_cols, stamp)
    maps = parse_label_maps(label_maps, names)
    primary_map = _with_unknown(maps.pop(names[0], None), unknown_label)
    src = text_source(text_cols, text_template, _stamped_source(stamp))
    examples = read_examples(test, src, names, id_col, primary_map, delimiter=delimiter, label_maps=maps)
    clf = open_classifier(create=False, **so)
    with clf.store:
        m = clf.evaluate(examples, unknown_label, parse_where(where))
    if as_json:
        emit_json(m)
        return
    click.echo(
        f"n={m['n']} accuracy={m['accuracy']:.4f} macro_f1={m['macro_f1']:.4f} coverage={m['coverage']:.4f} "
        f"answered_accuracy={m['answered_accuracy']:.4f} ece={m['ece']:.4f}"
    )
    click.echo(f"rule: {m['vote']} k={m['k']} threshold={m['threshold']:g} ({m['source']})")
    if unknown_label:
        auc = "n/a" if m["auroc_unknown"] is None else f"{m['auroc_unknown']:.4f}"
        click.echo(
            f"in_scope_accuracy={m['in_scope_accuracy']:.4f} unknown_recall={m['unknown_recall']:.4f} auroc_unknown={auc}"
        )
    worst = sorted(m["per_class"].items(), key=lambda kv: kv[1]["f1"])[:5]
    click.echo("weakest classes: " + ", ".join(f"{k} (f1 {v['f1']:.2f})" for k, v in worst))
    for name, sm in list(m["label_sets"].items())[1:]:
        click.echo(
            f"label set {name}: n={sm['n']} accuracy={sm['accuracy']:.4f} macro_f1={sm['macro_f1']:.4f} "
            f"coverage={sm['coverage']:.4f} rule: {sm['vote']} k={sm['k']} threshold={sm['threshold']:g}"
        )


@click.command()
@click.argument("texts", nargs=-1)
@click.option(
    "--input", "input_path", type=INPUT_FILE, default=None, help="CSV/TSV/JSONL/JSON/Parquet of tickets to classify."
)
@text_source_options
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write every input column, then the predictions (.csv, .tsv, .jsonl, .json or .parquet).",
)
@click.option("-k", "k", type=click.IntRange(1, 256), default=None, help="Override the tuned k.")
@where_option
@click.option("--json", "as_json", is_flag=True, help="Print predictions as JSON.")
@store_options
def classify(
    texts: tuple[str, ...],
    input_path: Path | None,
    text_cols: tuple[str, ...],
    text_template: str | None,
    delimiter: str | None,
    output: Path | None,
    k: int | None,
    where: tuple[str, ...],
    as_json: bool,
    **so: Any,
) -> None:
    """Classify TEXTS (or --input FILE): label, confidence and neighbours as evidence; every label set."""
    if bool(texts) == bool(input_path):
        raise InputError("give ticket texts as arguments or --input FILE (one of the two)")
    if input_path and output and output.resolve() == input_path.resolve():
        raise InputError("--output is the --input file; write the predictions somewhere else")
    if input_path:
        header, rows, items = read_table(input_path, _source_for(so, text_cols, text_template), delimiter)
    else:
        header, rows, items = ["text"], [{"text": t.strip()} for t in texts], [t.strip() for t in texts]
    if any(is_blank(t) for t in items):
        raise InputError("empty ticket text")
    if not all(is_utf8(t) for t in items):
        raise InputError("a ticket text argument is not valid UTF-8")
    clf = open_classifier(create=False, **so)
    with clf.store:
        preds, ref, rule = clf.classify(items, k=k, where=parse_where(where))
    extra = list(preds[0].sets)[1:] if preds else []
    if output:
        pred_cols = ["label", "confidence", "abstained", "reason", "suggestion", "alternatives", "shortened"]
        set_cols = [f"{name}_{c}" for name in extra for c in ("label", "confidence", "abstained", "suggestion")]
        taken = [c if c not in header else f"predicted_{c}" for c in [*pred_cols, "neighbours", *set_cols]]
        out_rows = []
        for row, p in zip(rows, preds, strict=True):
            nb = ";".join(f"{n.id}:{n.label}:{n.score:.4f}" for n in p.neighbours)
            alts = ";".join(f"{lab}:{c:.4f}" for lab, c in p.alternatives)
            pred = [p.label or "", round(p.confidence, 4), p.abstained, p.reason or "", p.suggestion or ""]
            sets = [
                v
                for q in (p.sets[name] for name in extra)
                for v in (q.label or "", round(q.confidence, 4), q.abstained, q.suggestion or "")
            ]
            out_rows.append([*(row[h] for h in header), *pred, alts, p.shortened, nb, *sets])
        write_table(output, [*header, *taken], out_rows)
    if as_json:
        emit_json(
            {
                "collection": ref.name,
                "version": ref.version,
                "rule": rule.to_dict(),
                "predictions": [{"text": t, **p.to_dict()} for t, p in zip(items, preds, strict=True)],
            }
        )
        return
    if output:
        click.echo(f"wrote {len(preds)} predictions to {output}")
        return
    for t, p in zip(items, preds, strict=True):
        label = p.label if not p.abstained else f"(abstained: {p.reason}; best guess {p.suggestion})"
        alts = ", ".join(f"{lab} {c:.2f}" for lab, c in p.alternatives[:2])
        others = "".join(
            f"  {name}={q.label or f'(abstained; {q.suggestion})'} {q.confidence:.2f}"
            for name, q in list(p.sets.items())[1:]
        )
        click.echo(f"{label}  conf={p.confidence:.2f}{f'  (then {alts})' if alts else ''}{others}  <- {t[:70]}")
        for n in p.neighbours[:3]:
            click.echo(f"    {n.score:.3f}  {n.label}  [{n.id[:24]}]")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@store_options
def info(as_json: bool, **so: Any) -> None:
    """Collection, count, encoder, labels with counts and the tuned rule."""
    clf = open_classifier(create=False, **so)
    with clf.store:
        d = clf.info()
    if as_json:
        emit_json(d)
        return
    click.echo(f"collection {d['collection']} ({d['version']}; versions: {', '.join(d['versions'])}) on {d['backend']}")
    click.echo(f"count      {d['count']}")
    click.echo(f"encoder    {d['encoder']}  ({d['encoder_source']})")
    if d.get("encoder_graph"):
        click.echo(f"graph      {d['encoder_graph']} on CPU")
    if d.get("encoder_parity"):
        click.echo("parity     " + ", ".join(f"{k}={v}" for k, v in d["encoder_parity"].items()))
    rule = Rule.from_dict(d["rule"]).describe() if d["rule"] else "not tuned (run `knnclass tune`)"
    click.echo(f"rule       {rule}")
    click.echo(f"labels     {len(d['labels'])}: " + ", ".join(f"{k}={v}" for k, v in list(d["labels"].items())[:12]))


@click.command()
@click.argument("tickets", type=INPUT_FILE)
@text_source_options
@click.option(
    "--clean", "mode", type=click.Choice(CLEAN_MODES), default=None, help="Default: the collection's, else email."
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Show only the first N tickets.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a CSV here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@store_options
def clean(
    tickets: Path,
    text_cols: tuple[str, ...],
    text_template: str | None,
    delimiter: str | None,
    mode: str | None,
    limit: int | None,
    output: Path | None,
    as_json: bool,
    **so: Any,
) -> None:
    """Show what the encoder will see of each ticket in TICKETS: the cleaned text and its token count.

    Uses the collection's cleaning when it exists (else --clean, default email).
    """
    from ..text import prepare

    texts = read_texts(tickets, text_source(text_cols, text_template), delimiter)[:limit]
    meta = None
    if so.get("qdrant_url") or Path(so["store"]).exists():  # the collection's settings and encoder, if any
        clf = open_classifier(create=False, **so)
        with clf.store:
            meta = clf.meta() if clf.exists() else None
            enc = clf.encoder_for(meta)
    else:
        from ..encoders import load_encoder

        enc = load_encoder()
    settings = TextSettings.from_meta(meta.text) if meta else TextSettings()
    if mode is not None:
        settings = TextSettings(mode, settings.long)
    seen = prepare(enc, texts, settings)
    rows = [
        {"original_chars": len(t), "clean_chars": len(c), "tokens": n, "shortened": sh, "clean_text": c}
        for t, c, n, sh in zip(texts, seen.texts, enc.count_tokens(seen.texts), seen.shortened, strict=True)
    ]
    if output:
        with output.open("w", newline="") as f:
            w = csv.DictWriter(f, ["text", *rows[0]])
            w.writeheader()
            w.writerows({"text": t, **r} for t, r in zip(texts, rows, strict=True))
        click.echo(f"wrote {len(rows)} cleaned tickets to {output}")
    elif as_json:
        for r in rows:
            click.echo(json.dumps(r, ensure_ascii=False))
    else:
        for i, r in enumerate(rows, 1):
            past = f" (past the limit: {settings.long})" if r["shortened"] else ""
            click.echo(f"--- ticket {i}: {r['original_chars']} -> {r['clean_chars']} chars, {r['tokens']} tokens{past}")
            click.echo(r["clean_text"])
    n_short = sum(bool(r["shortened"]) for r in rows)
    click.echo(
        f"cleaning {settings.clean!r}: {len(rows)} tickets, {n_short} past the encoder's {enc.max_tokens} tokens",
        err=True,
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@store_options
def collections(as_json: bool, **so: Any) -> None:
    """Every collection of the store: current version, versions, count, labels, tuned rule, text settings."""
    from ..classifier import Classifier

    clf = open_classifier(create=False, **so)
    out: list[dict[str, Any]] = []
    with clf.store:
        for name in clf.store.list_collections():
            c = Classifier(clf.store, name)
            if not c.exists():
                continue
            ref = c.ref()
            meta = c.meta(ref)
            labels = clf.store.label_counts(ref)
            out.append(
                {
                    "collection": name,
                    "version": ref.version,
                    "versions": clf.store.versions(name),
                    "count": clf.store.count(ref),
                    "labels": len(labels),
                    "label_counts": labels,
                    "label_sets": meta.set_names(),
                    "metadata": meta.payload_schema or {},
                    "encoder": meta.encoder,
                    "rule": Rule.from_dict(meta.rule).describe() if meta.rule else None,
                    "text": TextSettings.from_meta(meta.text).to_dict(),
                }
            )
    if as_json:
        emit_json(out)
        return
    if not out:
        click.echo("no collections")
    for d in out:
        rule = d["rule"] or "not tuned"
        click.echo(
            f"{d['collection']:<20} {d['version']:<5} versions {','.join(d['versions']):<12} "
            f"count {d['count']:<8} labels {d['labels']:<5} sets {','.join(d['label_sets']):<16} {rule}"
        )


COMMANDS = [index, tune, evaluate, classify, info, clean, collections]
