"""knnclass: nearest-neighbour text classification for support tickets."""

from __future__ import annotations

from .classifier import Classifier, Prediction
from .data import Example, read_examples
from .encoders import load_encoder
from .errors import (
    CollectionNotFoundError,
    EncoderMismatchError,
    InputError,
    KnnclassError,
    NotTunedError,
    StoreCorruptError,
    StoreLockedError,
)
from .store import open_store
from .voting import Decision, Neighbour, Rule

__all__ = [
    "Classifier",
    "CollectionNotFoundError",
    "Decision",
    "EncoderMismatchError",
    "Example",
    "InputError",
    "KnnclassError",
    "Neighbour",
    "NotTunedError",
    "Prediction",
    "Rule",
    "StoreCorruptError",
    "StoreLockedError",
    "load_encoder",
    "open_store",
    "read_examples",
]
