"""torch pieces of the trainer-based jobs: label-grouped batches, contrastive and cosine-head losses.

Imported only inside the training functions (this module imports torch at the top).
Every loss is a module with the sentence-transformers loss signature
``forward(sentence_features, labels)``, so SentenceTransformerTrainer drives all of them;
``labels`` is a (batch, n_tasks) tensor of label codes, one column per label set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import (
    BatchAllTripletLoss,
    BatchHardSoftMarginTripletLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.sentence_transformer.losses.batch_hard_triplet import BatchHardTripletLossDistanceFunction
from torch import Tensor, nn
from torch.utils.data import BatchSampler

from ..errors import InputError

__all__ = ["ContrastiveLoss", "CosineHeadLoss", "LabelGroupBatchSampler", "supcon_loss"]


class LabelGroupBatchSampler(BatchSampler):
    """Batches of `per_label` examples from each of `batch_size // per_label` distinct labels.

    The group of one label is contiguous in the batch (mnrl reads pairs from it). Each batch
    starts from a seed label drawn in proportion to the groups it has left; a `hard` share of
    the other labels are the seed's most confused ones in `confusions` (the index's own kNN
    confusions, refreshed by the trainer after every epoch), the rest are drawn at random.
    Every label's examples are shuffled and split into groups once per epoch; leftovers
    smaller than a group wait for a later epoch's shuffle. Seeded by (seed, pass number).
    """

    def __init__(
        self, codes: Sequence[int] | np.ndarray, batch_size: int, per_label: int, hard: float, seed: int
    ) -> None:
        super().__init__(range(len(codes)), batch_size, drop_last=False)
        self.per_label = per_label
        self.labels_per_batch = max(2, batch_size // per_label)
        self.hard = hard
        self.seed = seed
        self.passes = 0
        self.confusions: np.ndarray | None = None
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(codes):
            groups.setdefault(int(c), []).append(i)
        self.by_label = {c: idx for c, idx in sorted(groups.items()) if len(idx) >= per_label}
        if len(self.by_label) < 2:
            raise InputError(f"contrastive tuning needs two labels with >= {per_label} examples each")
        n_groups = sum(len(idx) // per_label for idx in self.by_label.values())
        self._len = max(1, n_groups // self.labels_per_batch)

    def set_confusions(self, confusions: np.ndarray) -> None:
        """Label-by-label confusion counts that pick the hard labels of the next passes."""
        self.confusions = confusions

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.passes])
        self.passes += 1
        m, width = self.per_label, self.labels_per_batch
        pools: dict[int, list[list[int]]] = {}
        for c, idx in self.by_label.items():
            order = rng.permutation(len(idx))
            pools[c] = [[idx[j] for j in order[k : k + m]] for k in range(0, len(idx) // m * m, m)]
        n_hard = round(self.hard * (width - 1))
        for _ in range(self._len):
            avail = [c for c, p in pools.items() if p]
            if len(avail) < 2:
                return
            left = np.array([len(pools[c]) for c in avail], dtype=np.float64)
            chosen = [avail[int(rng.choice(len(avail), p=left / left.sum()))]]
            if self.confusions is not None and n_hard:
                row = self.confusions[chosen[0]]
                for other in np.argsort(-row, kind="stable"):
                    if len(chosen) > n_hard or row[other] <= 0:
                        break
                    if int(other) != chosen[0] and pools.get(int(other)):
                        chosen.append(int(other))
            rest = [c for c in avail if c not in chosen]
            need = min(width - len(chosen), len(rest))
            if need > 0:
                w = np.array([len(pools[c]) for c in rest], dtype=np.float64)
                chosen += [rest[i] for i in rng.choice(len(rest), size=need, replace=False, p=w / w.sum())]
            yield [i for c in chosen for i in pools[c].pop()]


def supcon_loss(emb: Tensor, labels: Tensor, scale: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) over one batch of unit vectors:
    every same-label pair is a positive, every other example a negative; temperature 1/scale."""
    n = len(labels)
    eye = torch.eye(n, dtype=torch.bool, device=emb.device)
    sim = (scale * emb @ emb.T).masked_fill(eye, float("-inf"))
    logp = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    has = pos.any(dim=1)
    if not bool(has.any()):
        return emb.sum() * 0.0
    per_anchor = logp.masked_fill(~pos, 0.0).sum(dim=1)[has] / pos.sum(dim=1)[has]
    return -per_anchor.mean()


class ContrastiveLoss(nn.Module):
    """Pulls same-label tickets together and pushes the others away, for the kNN vote.

    kind: ``supcon`` (supervised contrastive), ``batch-all`` (BatchAllTripletLoss, cosine
    distance, margin), ``batch-hard-soft`` (BatchHardSoftMarginTripletLoss, cosine distance)
    or ``mnrl`` (MultipleNegativesRankingLoss: the batch's label pairs are anchor/positive,
    the other labels' examples the in-batch negatives). The triplet and ranking losses are
    sentence-transformers' own, called on the batch's embeddings.

    Multi-task: the embeddings are computed once per batch and the losses of all label sets
    summed, the first with weight 1 and each other with `task_weight`. Batches are grouped
    by the first label set only, so with ``mnrl`` (whose pairs are by that label) the other
    label sets use ``supcon`` on the same batch.
    """

    def __init__(
        self, model: SentenceTransformer, kind: str, n_tasks: int, scale: float, margin: float, task_weight: float
    ) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.n_tasks = n_tasks
        self.scale = scale
        self.task_weight = task_weight
        cosine = BatchHardTripletLossDistanceFunction.cosine_distance
        self.lib: nn.Module | None = {
            "batch-all": lambda: BatchAllTripletLoss(model, distance_metric=cosine, margin=margin),
            "batch-hard-soft": lambda: BatchHardSoftMarginTripletLoss(model, distance_metric=cosine),
            "mnrl": lambda: MultipleNegativesRankingLoss(model, scale=scale),
        }.get(kind, lambda: None)()
        self.losses: list[float] = []

    def _one(self, kind: str, emb: Tensor, y: Tensor) -> Tensor:
        if kind == "supcon":
            return supcon_loss(emb, y, self.scale)
        if kind == "batch-all":
            return BatchAllTripletLoss.batch_all_triplet_loss(self.lib, y, emb)  # type: ignore[arg-type]
        if kind == "batch-hard-soft":
            return BatchHardSoftMarginTripletLoss.batch_hard_triplet_soft_margin_loss(self.lib, y, emb)  # type: ignore[arg-type]
        if kind == "mnrl":
            if len(y) % 2 or not bool(torch.equal(y[0::2], y[1::2])):
                raise InputError("mnrl needs batches of same-label pairs (LabelGroupBatchSampler, per_label=2)")
            assert isinstance(self.lib, MultipleNegativesRankingLoss)
            return self.lib.compute_loss_from_embeddings([emb[0::2], emb[1::2]], None)  # type: ignore[arg-type]
        raise InputError(f"unknown contrastive loss {kind!r}")

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        feats = list(sentence_features)
        emb = F.normalize(self.model(feats[0])["sentence_embedding"], dim=-1)
        labels = labels.reshape(len(emb), -1)
        total = self._one(self.kind, emb, labels[:, 0])
        for j in range(1, self.n_tasks):
            kind = "supcon" if self.kind == "mnrl" else self.kind
            total = total + self.task_weight * self._one(kind, emb, labels[:, j])
        self.losses.append(float(total.detach()))
        return total


class CosineHeadLoss(nn.Module):
    """full / last-layer: one scaled cosine classifier per label set, cross-entropy summed.

    Not a sentence-transformers loss (the heads are trained with the encoder and served
    as numpy weights), so it wraps the heads as this loss module's parameters.
    """

    def __init__(
        self, model: SentenceTransformer, init: dict[str, np.ndarray], scale: float, label_smoothing: float
    ) -> None:
        super().__init__()
        self.model = model
        self.tasks = list(init)
        self.heads = nn.ParameterDict(
            {self.key(t): nn.Parameter(torch.tensor(w, dtype=torch.float32)) for t, w in init.items()}
        )
        self.scale = scale
        self.label_smoothing = label_smoothing
        self.losses: list[float] = []

    @staticmethod
    def key(task: str) -> str:
        return task.replace(".", "_")

    def weights(self, task: str) -> np.ndarray:
        """The head of `task` as a numpy array (a copy)."""
        w: np.ndarray = self.heads[self.key(task)].detach().cpu().numpy().copy()
        return w

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        feats = list(sentence_features)
        emb = F.normalize(self.model(feats[0])["sentence_embedding"], dim=-1)
        labels = labels.reshape(len(emb), -1)
        loss = torch.zeros((), device=emb.device)
        for j, t in enumerate(self.tasks):
            logits = self.scale * emb @ F.normalize(self.heads[self.key(t)], dim=-1).T
            loss = loss + F.cross_entropy(logits, labels[:, j], label_smoothing=self.label_smoothing)
        self.losses.append(float(loss.detach()))
        return loss
