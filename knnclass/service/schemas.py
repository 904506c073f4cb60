"""Request and response models for the HTTP API, with their limits."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from ..data import is_blank, is_utf8

__all__ = [
    "MAX_TEXTS",
    "ClassifyBody",
    "ClassifyResponse",
    "ErrorBody",
    "ExampleIn",
    "ExamplesRequest",
    "IndexJobRequest",
    "PromoteJobRequest",
    "RelabelRequest",
    "RuleIn",
    "SnapshotRequest",
    "TuneJobRequest",
]

MAX_TEXTS = 256
MAX_ID = 256

FilterValue = StrictStr | StrictInt | StrictFloat
# {"product": "cards", "created_at": {"gte": "2026-03-01"}}: equality, or ranges (gt, gte, lt, lte; eq)
Filter = dict[StrictStr, FilterValue | dict[Literal["eq", "gt", "gte", "lt", "lte"], FilterValue]]


def _encodable(value: str, what: str) -> str:
    """JSON can carry lone UTF-16 surrogates that no encoder can take: refuse them here."""
    if not is_utf8(value):
        raise ValueError(f"{what} contains an unpaired surrogate (invalid Unicode)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuleIn(_Strict):
    vote: Literal["majority", "weighted"] = "majority"
    size: Literal["k", "pct"] = "k"
    value: StrictInt | StrictFloat = Field(3, gt=0, le=100_000)
    threshold: StrictInt | StrictFloat = Field(0.0, ge=0, le=1)
    novelty: StrictInt | StrictFloat | None = Field(None, ge=-1e6, le=1e6)


class ClassifyBody(_Strict):
    text: StrictStr | None = None
    texts: list[StrictStr] | None = Field(None, min_length=1, max_length=MAX_TEXTS)
    fields: dict[StrictStr, StrictStr] | None = Field(None, min_length=1, max_length=64)
    k: StrictInt | None = Field(None, ge=1, le=256)
    rule: RuleIn | None = None
    include_neighbours: StrictBool = True
    truncate: StrictBool = True  # past the token limit: the collection's long-text strategy; false: 422
    filter: Filter | None = Field(None, max_length=32)  # only neighbours whose metadata match vote

    @model_validator(mode="after")
    def _one_of(self) -> ClassifyBody:
        if sum(x is not None for x in (self.text, self.texts, self.fields)) != 1:
            raise ValueError("give exactly one of 'text', 'texts' or 'fields'")
        if self.fields is not None:
            if all(is_blank(v) for v in self.fields.values()):
                raise ValueError("fields must not all be empty")
            for v in self.fields.values():
                _encodable(v, "field")
        for t in self.all_texts():
            if is_blank(t):
                raise ValueError("texts must not be empty")
            _encodable(t, "text")
        return self

    def all_texts(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class NeighbourOut(BaseModel):
    id: str
    label: str
    score: float


class AlternativeOut(BaseModel):
    label: str
    confidence: float


class PredictionOut(BaseModel):
    label: str | None
    confidence: float
    abstained: bool
    reason: str | None = None
    suggestion: str | None = None
    familiarity: float | None = None
    alternatives: list[AlternativeOut] = []
    source: str = "knn"
    shortened: bool = False
    neighbours: list[NeighbourOut] | None = None
    labels: dict[str, PredictionOut] | None = None  # every label set's answer (collections with several)


class ClassifyResponse(BaseModel):
    predictions: list[PredictionOut]
    collection: str
    version: str
    encoder: str
    rule: dict[str, Any]


class ExampleIn(_Strict):
    id: StrictStr | None = Field(None, min_length=1, max_length=MAX_ID)
    text: StrictStr
    label: StrictStr = Field(min_length=1, max_length=MAX_ID)

    @model_validator(mode="after")
    def _not_blank(self) -> ExampleIn:
        if is_blank(self.text):
            raise ValueError("text must not be empty")
        if is_blank(self.label):
            raise ValueError("label must not be empty")
        for value, what in ((self.text, "text"), (self.label, "label"), (self.id or "", "id")):
            _encodable(value, what)
        return self


class ExamplesRequest(_Strict):
    examples: list[ExampleIn] = Field(min_length=1, max_length=MAX_TEXTS)
    truncate: StrictBool = True  # past the token limit: the collection's long-text strategy; false: 422


class RelabelRequest(_Strict):
    """{"label": ...} for the primary label set, or {"labels": {"priority": "urgent", ...}} per set."""

    label: StrictStr | None = Field(None, min_length=1, max_length=MAX_ID)
    labels: dict[StrictStr, StrictStr] | None = Field(None, min_length=1, max_length=16)

    @model_validator(mode="after")
    def _valid(self) -> RelabelRequest:
        if (self.label is None) == (self.labels is None):
            raise ValueError("give exactly one of 'label' or 'labels'")
        if self.label is not None:
            _encodable(self.label, "label")
        for value in (self.labels or {}).values():
            _encodable(value, "label")
            if is_blank(value) or len(value) > MAX_ID:
                raise ValueError(f"labels must be 1-{MAX_ID} characters")
        return self


class SnapshotRequest(_Strict):
    name: StrictStr = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


_Names = list[StrictStr] | None


class IndexJobRequest(_Strict):
    """A bulk index job: a file on the server (under the service's import dir) and the index options."""

    path: StrictStr | None = Field(None, min_length=1, max_length=4096)
    text_col: _Names = Field(None, max_length=32)
    text_template: StrictStr | None = Field(None, max_length=4096)
    delimiter: StrictStr | None = Field(None, min_length=1, max_length=1)
    label_col: _Names = Field(None, max_length=16)
    label_map: _Names = Field(None, max_length=16)  # NAME=FILE (the file under the import dir too)
    id_col: StrictStr | None = Field(None, max_length=256)
    meta_col: _Names = Field(None, max_length=64)
    clean: StrictStr | None = Field(None, max_length=32)
    long_text: StrictStr | None = Field(None, max_length=32)
    batch_size: StrictInt | None = Field(None, ge=1, le=4096)


class TuneJobRequest(_Strict):
    validation: StrictStr | None = Field(None, min_length=1, max_length=4096)
    unknown_label: StrictStr | None = Field(None, max_length=256)
    id_col: StrictStr | None = Field(None, max_length=256)
    target_accuracy: StrictFloat | None = Field(None, gt=0, le=1)
    target_unknown_recall: StrictFloat | None = Field(None, gt=0, le=1)
    target_confidence: StrictFloat | None = Field(None, ge=0.5, lt=1)
    unknown_weight: StrictFloat | None = Field(None, gt=0, lt=1)
    long_text: StrictStr | None = Field(None, max_length=32)


class PromoteJobRequest(_Strict):
    run_dir: StrictStr = Field(min_length=1, max_length=4096)
    rule: Literal["auto", "knn", "head", "ensemble"] = "auto"
