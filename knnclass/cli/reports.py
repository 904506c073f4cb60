"""report, suspects, duplicates, drift: evaluation and label-quality commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..data import read_examples, read_texts
from ._common import (
    INPUT_FILE,
    emit_json,
    label_col_option,
    label_map_option,
    load_label_map,
    open_classifier,
    store_options,
    text_col_option,
)
from ._labels import label_set_option


@click.command()
@click.argument("test", type=INPUT_FILE)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("knnclass-report"), show_default=True
)
@text_col_option
@label_col_option
@label_map_option
@click.option("--positive-label", default=None, help="For a binary case: the label whose recall matters (e.g. urgent).")
@label_set_option
@click.option("--json", "as_json", is_flag=True)
@store_options
def report(
    test: Path,
    out: Path,
    text_col: str,
    label_col: str,
    label_map: Path | None,
    positive_label: str | None,
    label_set: str | None,
    as_json: bool,
    **so: Any,
) -> None:
    """Write report.md and PNGs (confusions, accuracy vs k, confidence, threshold) for TEST.

    With --label-set NAME, for that label set (its labels read from column NAME unless --label-col says)."""
    from click.core import ParameterSource

    from ..reports import write_report

    if (
        label_set is not None
        and click.get_current_context().get_parameter_source("label_col") is ParameterSource.DEFAULT
    ):
        label_col = label_set
    examples = read_examples(test, text_col, label_col, None, load_label_map(label_map))
    clf = open_classifier(create=False, **so)
    with clf.store:
        r = write_report(clf.for_set(label_set), examples, out, positive_label)
    if as_json:
        emit_json(r)
    else:
        click.echo(
            f"accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}; wrote {', '.join(r['files'])} to {out}"
        )


@click.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 256), help="Neighbours consulted.")
@click.option(
    "--min-agreement",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Least weight share of the suggested label among the neighbours.",
)
@click.option(
    "--apply", "apply_path", type=INPUT_FILE, default=None, help="CSV id,label of reviewed corrections to apply."
)
@click.option(
    "--template",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the suspects as a CSV (id,label,...) to review and --apply.",
)
@label_set_option
@click.option("--json", "as_json", is_flag=True)
@store_options
def suspects(
    limit: int,
    k: int,
    min_agreement: float,
    apply_path: Path | None,
    template: Path | None,
    label_set: str | None,
    as_json: bool,
    **so: Any,
) -> None:
    """Examples whose label (of --label-set, default the primary set) a strong majority of their
    neighbours contradict (leave-one-out); --apply relabels that set."""
    from ..reports import apply_relabels, find_suspects, write_relabels_template

    base = open_classifier(create=False, **so)
    with base.store:
        clf = base.for_set(label_set)
        if apply_path is not None:
            n = apply_relabels(clf, apply_path)
            click.echo(f"relabelled {n} examples")
            return
        found = find_suspects(clf, k=k, min_agreement=min_agreement, limit=limit)
    if template is not None:
        write_relabels_template(found, template)
    if as_json:
        emit_json([s.to_dict() for s in found])
        return
    for s in found:
        click.echo(f"{s.margin:.2f}  {s.id[:28]:<28}  {s.label} -> {s.suggested_label}  | {s.text[:60]}")
    click.echo(f"{len(found)} suspects")


@click.command()
@click.option("--threshold", default=0.98, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--json", "as_json", is_flag=True)
@store_options
def duplicates(threshold: float, limit: int, as_json: bool, **so: Any) -> None:
    """Near-duplicate examples (cosine >= threshold); conflicting labels first."""
    from ..reports import find_duplicates

    clf = open_classifier(create=False, **so)
    with clf.store:
        found = find_duplicates(clf, threshold)
    if as_json:
        emit_json(found[:limit])
        return
    for d in found[:limit]:
        mark = "CONFLICT" if d["conflict"] else "same    "
        click.echo(f"{d['score']:.4f} {mark} {d['label_a']} / {d['label_b']}  | {d['text_a'][:60]}")
    click.echo(f"{len(found)} pairs ({sum(d['conflict'] for d in found)} with conflicting labels)")


@click.command()
@click.argument("new", type=INPUT_FILE)
@text_col_option
@click.option("--json", "as_json", is_flag=True)
@store_options
def drift(new: Path, text_col: str, as_json: bool, **so: Any) -> None:
    """How far NEW tickets sit from the indexed history; flags possible new topics."""
    from ..reports import drift as compute

    texts = read_texts(new, text_col)
    clf = open_classifier(create=False, **so)
    with clf.store:
        d = compute(clf, texts)
    if as_json:
        emit_json(d)
        return
    click.echo(f"nearest-neighbour similarity, history: {d['history_quantiles']}")
    click.echo(f"nearest-neighbour similarity, new:     {d['new_quantiles']}")
    click.echo(
        f"{d['flagged_share']:.1%} of new tickets below the history's 5th percentile ({d['new_topic_cutoff']}); "
        f"expected ~{d['expected_share']:.0%}"
    )
    for f in d["flagged"][:10]:
        click.echo(f"  {f['nearest_similarity']:.3f}  {f['text'][:70]}")


COMMANDS = [report, suspects, duplicates, drift]
