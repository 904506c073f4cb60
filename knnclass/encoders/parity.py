"""The parity gate: an export's graphs must give the vectors the torch model gives.

Each graph (model.onnx, the fused-ops graph, the fp16 CUDA graph) is run on fixed
sentences and compared by cosine with the torch model's vectors; with parity data (a dir
with train.csv and test.csv) a quantised graph must also keep kNN accuracy within a
margin of the fp32 graph's. A graph that misses is fatal, but for the fused graph: that
one is dropped (model.onnx serves) and the reason recorded in the metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EncoderError, ExportError
from .metadata import ExportSettings
from .onnx import OnnxEncoder

__all__ = ["PARITY_SENTENCES", "ParityGate", "cosine_check", "knn_accuracy"]

# Fixed, real ticket-like sentences for the parity gate (varied length and topic).
PARITY_SENTENCES = [
    "I still have not received my new card, I ordered over a week ago.",
    "My card was stolen yesterday, please block it immediately!",
    "How do I change my PIN?",
    "Why was I charged a fee for withdrawing cash from an ATM abroad?",
    "The exchange rate applied to my payment looks wrong.",
    "I can't log in to the app, it says my account is locked.",
    "Someone made transactions on my account that I don't recognise.",
    "Can I top up my account with a cheque?",
    "My transfer to a friend has been pending for three days, when will it arrive?",
    "Where can I find my account statement for last month?",
    "The refund from the shop still isn't showing up in my balance.",
    "What currencies can I hold in my account?",
    "Please close my account, I no longer want to use your service.",
    "I was charged twice for the same purchase at the supermarket.",
    "How long does identity verification take?",
    "My contactless payments stopped working this morning.",
    "Is there a limit on how much money I can send abroad in one day?",
    "Help",
    "The ATM swallowed my card and didn't give me any cash but my balance went down.",
    "Can I get a virtual card for online shopping?",
    "Why did my top up by bank transfer fail?",
    "I need to update my home address and phone number.",
    "The app keeps crashing when I try to open the cards tab on my phone.",
    "Do you support Apple Pay and Google Pay?",
    "I think my card has been compromised, there are payments from another country.",
    "What is the fee for receiving money from a US bank account?",
    "How can I link my new card to the app? The code is not accepted.",
    "Why is my salary not in my account yet? It was sent on Friday.",
    "I want to dispute a direct debit that I never authorised.",
    "Can my child under 18 open an account with you?",
    "urgent!!! money disappeared from my account last night, nobody answers the phone",
    "Ticket #4521: customer reports that the disposable virtual card was declined at checkout "
    "even though the balance was sufficient and the merchant accepts Mastercard; "
    "they tried three times over two days, cleared the browser cache, and re-entered the "
    "CVV each time, and now they are worried the account has been frozen for fraud.",
]

FUSED = "fused_"  # the prefix of the fused-ops graph's parity results
CUDA_FP16 = "cuda_fp16_"  # the fp16 graph's: checked for cosine here, for kNN on the GPU it is for


def cosine_check(
    reference: np.ndarray, got: np.ndarray, min_cosine: float, mean_cosine: float
) -> tuple[float, float, str | None]:
    """(min, mean) cosine of `got`'s rows to `reference`'s, and why they miss the bounds (None: pass)."""
    cos = np.sum(reference * got, axis=1) / np.linalg.norm(reference, axis=1)
    lo, mean = round(float(cos.min()), 5), round(float(cos.mean()), 5)
    if lo < min_cosine or mean < mean_cosine:
        return lo, mean, f"cosine min {lo} (need >= {min_cosine}), mean {mean} (need >= {mean_cosine})"
    return lo, mean, None


def knn_accuracy(encoder: OnnxEncoder, data_dir: Path, k: int = 3) -> float:
    """Banking77-style kNN accuracy (train -> test, majority of k, cosine) of an encoder."""
    from ..data import read_examples
    from ..voting import vote_batch

    train = read_examples(data_dir / "train.csv")
    test = read_examples(data_dir / "test.csv")
    labels = sorted({e.label for e in train})
    code = {lab: i for i, lab in enumerate(labels)}
    a = encoder.embed([e.text for e in train])
    b = encoder.embed([e.text for e in test])
    sims = b @ a.T
    top = np.argsort(-sims, axis=1)[:, :k]
    codes = np.array([[code[train[j].label] for j in row] for row in top])
    winner, _, _, _ = vote_batch(codes, np.take_along_axis(sims, top, axis=1), k, "majority", len(labels))
    return float(np.mean([w >= 0 and labels[w] == e.label for w, e in zip(winner, test, strict=True)]))


class ParityGate:
    """The gate over one export dir's graphs; `results` collects what `meta["parity"]` records.

    `graphs` maps each graph's result prefix ("" for model.onnx, FUSED, CUDA_FP16) to its
    file in `model_dir`; `meta` is the dir's metadata, updated where the fused graph is dropped.
    """

    def __init__(
        self, model_dir: Path, graphs: dict[str, str], meta: dict[str, Any], settings: ExportSettings, name: str
    ):
        self.model_dir = model_dir
        self.graphs = dict(graphs)
        self.meta = meta
        self.settings = settings
        self.name = name
        self.results: dict[str, Any] = {"n_sentences": len(PARITY_SENTENCES)}

    def _failed(self, prefix: str, graph: str, message: str) -> None:
        """A graph missed the gate: fatal, but for the fused graph (dropped: model.onnx serves)."""
        if prefix != FUSED:
            raise ExportError(f"export of {self.name} failed the parity gate ({graph}): {message}")
        del self.graphs[prefix]
        (self.model_dir / graph).unlink()
        for key in ("fused_model_file", "fused_ops_version"):
            self.meta.pop(key, None)
        self.meta["fused_rejected"] = message

    def check_cosine(self, reference: np.ndarray) -> None:
        """Each graph's vectors of PARITY_SENTENCES against `reference` (the torch model's)."""
        for prefix, graph in list(self.graphs.items()):
            try:
                got = OnnxEncoder(self.model_dir, graph=graph).embed(PARITY_SENTENCES)
            except EncoderError as e:
                if prefix != FUSED:
                    raise
                self._failed(prefix, graph, f"does not load: {e}")
                continue
            lo, mean, failure = cosine_check(reference, got, self.settings.min_cosine, self.settings.mean_cosine)
            self.results.update({f"{prefix}cosine_min": lo, f"{prefix}cosine_mean": mean})
            if failure is not None:
                self._failed(prefix, graph, failure)

    def check_knn(self, fp32_dir: Path, data_dir: Path) -> None:
        """Each CPU graph's kNN accuracy on `data_dir` against that of the fp32 encoder in `fp32_dir`."""
        acc32 = knn_accuracy(OnnxEncoder(fp32_dir), data_dir)
        self.results.update(knn_data=data_dir.name, knn_accuracy_fp32=round(acc32, 5))
        for prefix, graph in list(self.graphs.items()):
            if prefix == CUDA_FP16:  # fp16 is checked on the GPU it is for, not here
                continue
            acc = knn_accuracy(OnnxEncoder(self.model_dir, graph=graph), data_dir)
            drop = round((acc32 - acc) * 100, 3)
            self.results.update({f"{prefix}knn_accuracy": round(acc, 5), f"{prefix}knn_drop_pt": drop})
            if drop > self.settings.max_knn_drop_pt:
                self._failed(
                    prefix,
                    graph,
                    f"kNN accuracy {acc:.4f} is {drop} points below fp32 ({acc32:.4f}); "
                    f"allowed {self.settings.max_knn_drop_pt}",
                )
