"""The contrastive pieces without a model: label-grouped batches, hard labels, supcon, confusions."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from knnclass.errors import InputError  # noqa: E402
from knnclass.jobs.finetune import FinetuneSettings, label_confusions  # noqa: E402
from knnclass.jobs.losses import LabelGroupBatchSampler, supcon_loss  # noqa: E402


def _codes(n_labels: int = 10, per: int = 7) -> list[int]:
    return [i % n_labels for i in range(n_labels * per)]


def test_batches_hold_distinct_labels_in_contiguous_groups() -> None:
    codes = _codes()
    s = LabelGroupBatchSampler(codes, batch_size=8, per_label=2, hard=0.5, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == (10 * 3) // 4  # 3 pairs per label, 4 labels per batch
    for b in batches:
        labs = [codes[i] for i in b]
        assert len(b) == 8 and labs[0::2] == labs[1::2] and len(set(labs)) == 4
    used = [i for b in batches for i in b]
    assert len(used) == len(set(used))  # no example twice in one pass
    again = LabelGroupBatchSampler(codes, batch_size=8, per_label=2, hard=0.5, seed=1)
    assert list(again) == batches  # same seed, same batches
    assert list(s) != batches  # the next pass reshuffles


def test_hard_labels_come_from_the_confusions() -> None:
    codes = _codes()
    conf = np.zeros((10, 10), dtype=np.int64)
    for a in range(10):
        conf[a, (a + 1) % 10] = 5  # each label is confused with the next one only
    s = LabelGroupBatchSampler(codes, batch_size=4, per_label=2, hard=1.0, seed=0)
    s.set_confusions(conf)
    batches = list(s)

    def partnered(bs: list[list[int]]) -> int:
        return sum(codes[b[2]] == (codes[b[0]] + 1) % 10 for b in bs)

    # its confused partner, unless that label has no group left (late in a pass)
    assert partnered(batches) >= 0.7 * len(batches)
    assert partnered(list(LabelGroupBatchSampler(codes, 4, 2, 1.0, 0))) < 0.5 * len(batches)  # no confusions: random


def test_sampler_and_settings_refuse_what_cannot_train() -> None:
    with pytest.raises(InputError, match="two labels"):
        LabelGroupBatchSampler([0, 0, 0, 1], batch_size=4, per_label=2, hard=0.5, seed=0)
    with pytest.raises(InputError, match="per_label must be 2"):
        FinetuneSettings(strategy="contrastive", loss="mnrl", per_label=4)
    with pytest.raises(InputError, match="loss must be one of"):
        FinetuneSettings(strategy="contrastive", loss="arcface")


def test_supcon_prefers_clustered_embeddings() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    centres = torch.eye(3)
    clustered = torch.nn.functional.normalize(
        centres[labels] + 0.05 * torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    mixed = torch.nn.functional.normalize(centres[torch.tensor([0, 1, 2, 0, 1, 2])], dim=-1)
    assert float(supcon_loss(clustered, labels, 20.0)) < 0.1 < float(supcon_loss(mixed, labels, 20.0))
    assert float(supcon_loss(clustered, torch.tensor([0, 1, 2, 3, 4, 5]), 20.0)) == 0.0  # no positives


def test_label_confusions_count_other_label_neighbours() -> None:
    vecs = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99]], dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    conf = label_confusions(vecs, np.array([0, 1, 1, 1]), 2, k=1)
    assert conf.tolist() == [[0, 1], [1, 0]]  # 0 and the first 1 are each other's nearest
