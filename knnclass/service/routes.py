"""The per-collection routes: classify, examples, info, snapshot.

Mounted twice: under /v1 for the default collection and under /v1/collections/{name} for any
collection of the store. Routes parse, call the library through the engine, and format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends

from .. import history
from ..classifier import Classifier, ClassifyRequest
from ..data import Example, example_id
from ..errors import InputError
from ..store.base import Where
from ..voting import Rule
from .engine import Engine
from .schemas import ClassifyBody, ClassifyResponse, ExamplesRequest, RelabelRequest, SnapshotRequest

__all__ = ["RouteContext", "collection_router", "example_out"]


@dataclass(frozen=True)
class RouteContext:
    """What every route needs: the engine, the auth dependencies, who writes, where snapshots go."""

    engine: Engine
    require_read: Callable[..., None]
    require_write: Callable[..., None]
    forbidden: Callable[[str], Exception]
    who: str
    snapshot_dir: str | None


def example_out(e: Example) -> dict[str, Any]:
    """An example as the API shows it: its extra label sets and metadata only where it has them."""
    out: dict[str, Any] = {"id": e.id, "text": e.text, "label": e.label}
    if e.labels:
        out["labels"] = e.labels
    if e.meta:
        out["meta"] = e.meta
    return out


def collection_router(ctx: RouteContext, pick: Callable[..., Classifier], tag: str = "") -> APIRouter:
    """The routes of one collection; `pick` is the FastAPI dependency resolving it."""
    engine, who = ctx.engine, ctx.who
    read, write = [Depends(ctx.require_read)], [Depends(ctx.require_write)]
    r = APIRouter()
    tags: list[str | Any] = [f"{tag}classify"]
    ex_tags: list[str | Any] = [f"{tag}examples"]

    @r.post(
        "/classify",
        response_model=ClassifyResponse,
        response_model_exclude_unset=True,  # an absent key stays absent (neighbours); a null label stays null
        tags=tags,
        dependencies=read,
    )
    async def classify(body: ClassifyBody, clf: Classifier = Depends(pick)) -> dict[str, Any]:
        rule = Rule(**body.rule.model_dump()) if body.rule else None
        fields = [body.fields] if body.fields is not None else []
        where = Where.from_filter(body.filter) if body.filter else None
        req = ClassifyRequest(body.all_texts(), rule, body.k, body.truncate, fields, where)
        res = await engine.classify(req, clf)
        return {
            "predictions": [p.to_dict(body.include_neighbours) for p in res.predictions],
            "collection": res.ref.name,
            "version": res.ref.version,
            "encoder": res.encoder,
            "rule": res.rule.to_dict(),
        }

    @r.post("/examples", tags=ex_tags, dependencies=write)
    async def add_examples(body: ExamplesRequest, clf: Classifier = Depends(pick)) -> dict[str, Any]:
        examples = [Example(e.id or example_id(e.text), e.text, e.label.strip()) for e in body.examples]
        unique = list({e.id: e for e in examples}.values())  # a repeated id: the last one wins
        await engine.write(clf.add, unique, None, body.truncate, who)
        return {"upserted": len(unique), "ids": [e.id for e in examples]}

    @r.get("/examples/{example_id:path}/history", tags=ex_tags, dependencies=read)
    async def example_history(example_id: str, clf: Classifier = Depends(pick)) -> dict[str, Any]:
        """Every recorded change of the example, oldest first (change id, time, who, kind, old -> new)."""
        changes = await engine.read(history.example_history, clf.store, clf.collection, example_id)
        return {"id": example_id, "history": changes}

    @r.get("/examples/{example_id:path}", tags=ex_tags, dependencies=read)
    async def get_example(example_id: str, clf: Classifier = Depends(pick)) -> dict[str, Any]:
        return example_out(await engine.read(clf.get, example_id))

    @r.patch("/examples/{example_id:path}", tags=ex_tags, dependencies=write)
    async def relabel(example_id: str, body: RelabelRequest, clf: Classifier = Depends(pick)) -> dict[str, Any]:
        """{"label": ...} relabels the primary label set; {"labels": {set: label, ...}} the sets named."""
        e: Example | None = None
        if body.label is not None:
            e = await engine.write(clf.relabel, example_id, body.label, None, who)
        for name, label in (body.labels or {}).items():
            e = await engine.write(clf.relabel, example_id, label, None, who, name)
        if e is None:
            raise InputError("give label or labels")
        return example_out(e)

    @r.delete("/examples/{example_id:path}", tags=ex_tags, dependencies=write)
    async def delete(example_id: str, clf: Classifier = Depends(pick)) -> dict[str, Any]:
        await engine.write(clf.delete, example_id, None, who)
        return {"deleted": example_id}

    @r.get("/info", tags=tags, dependencies=read)
    async def info(clf: Classifier = Depends(pick)) -> dict[str, Any]:
        d: dict[str, Any] = await engine.read(clf.info)
        return d

    @r.post("/admin/snapshot", tags=[f"{tag}admin"], dependencies=write)
    async def take_snapshot(body: SnapshotRequest, clf: Classifier = Depends(pick)) -> dict[str, Any]:
        """Snapshot the collection into the configured snapshot dir, while serving.

        Runs on the writer thread, so it sees no half-applied live edit; classify goes on.
        """
        if ctx.snapshot_dir is None:
            raise ctx.forbidden("snapshots over HTTP are off: start the service with --snapshot-dir DIR")
        from pathlib import Path

        from ..jobs.backup import snapshot

        out = Path(ctx.snapshot_dir) / body.name
        d: dict[str, Any] = await engine.write(snapshot, clf.store, clf.collection, out)
        return {**d, "path": str(out)}

    return r
