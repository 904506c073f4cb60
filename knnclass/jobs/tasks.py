"""Label sets (tasks) read from a labelled file, and the stratified validation split."""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data import Example, TextSource, read_examples, read_label_map
from ..errors import InputError

__all__ = ["TaskSet", "load_tasks", "split_validation"]


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
    text_col: str | Sequence[str] | TextSource = "text",
    label_cols: Sequence[str] = ("category",),
    label_maps: dict[str, Path] | None = None,
    delimiter: str | None = None,
) -> TaskSet:
    """Read one task per label column, plus one per label map (applied to the first column).

    `text_col` names the text column, several (joined in order) or a `TextSource` template."""
    if not label_cols:
        raise InputError("at least one label column is needed")
    by_col = {c: read_examples(path, text_col, c, delimiter=delimiter) for c in label_cols}
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
        raise InputError(f"the validation fraction must be in (0, 1), not {fraction}")
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
        raise InputError("too few examples to carve a validation set; give a validation file")
    return data.subset(train), data.subset(sorted(val))
