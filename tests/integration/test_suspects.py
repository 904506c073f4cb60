"""suspects finds flipped labels: real encoder, real Qdrant Edge, a seeded 5 % flip."""

from __future__ import annotations

import random
from pathlib import Path

from knnclass.classifier import Classifier
from knnclass.data import Example, read_examples
from knnclass.reports import find_suspects
from knnclass.store.edge import EdgeStore


def flipped(examples: list[Example], share: float, seed: int) -> tuple[list[Example], set[str]]:
    """A copy with `share` of the labels flipped to another label, and the flipped ids."""
    rng = random.Random(seed)
    labels = sorted({e.label for e in examples})
    picked = set(rng.sample(range(len(examples)), round(share * len(examples))))
    out = [
        Example(e.id, e.text, rng.choice([lab for lab in labels if lab != e.label])) if i in picked else e
        for i, e in enumerate(examples)
    ]
    return out, {examples[i].id for i in picked}


def test_suspects_recall_on_flipped_banking77_slice(real_encoder, data_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = read_examples(data_dir / "train.csv")
    keep = sorted({e.label for e in rows})[:20]
    per: dict[str, int] = {}
    sl = []
    for e in rows:
        if e.label in keep and per.get(e.label, 0) < 40:
            per[e.label] = per.get(e.label, 0) + 1
            sl.append(e)
    noisy, flips = flipped(sl, 0.05, seed=77)
    clf = Classifier(EdgeStore(tmp_path / "s"), "tickets", encoder=real_encoder)
    clf.index(noisy)
    found = find_suspects(clf, k=10, limit=2 * len(flips))
    recall = len({s.id for s in found} & flips) / len(flips)
    assert len(flips) == 40
    assert recall >= 0.7, recall
    clf.store.close()


def test_flip_helper_is_seeded() -> None:
    ex = [Example(str(i), f"t{i}", "ab"[i % 2]) for i in range(100)]
    a, fa = flipped(ex, 0.05, 1)
    b, fb = flipped(ex, 0.05, 1)
    assert a == b and fa == fb and len(fa) == 5
    assert all(x.label != y.label for x, y in zip(a, ex, strict=True) if x.id in fa)
