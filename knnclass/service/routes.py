"""The per-collection routes: classify, examples, info, snapshot.

Mounted twice: under /v1 for the default collection and under /v1/collections/{name} for any
collection of the store. Routes parse, call the library through the engine, and format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from .. import history
from ..classifier import Classifier, ClassifyRequest
from ..data import Example, example_id
from ..errors import InputError
from ..store.base import Where
from ..voting import Rule
from .engine import Engine
from .jobs import JobRunner
from .schemas import (
    ClassifyBody,
    ClassifyResponse,
    ExamplesRequest,
    IndexJobRequest,
    PromoteJobRequest,
    RelabelRequest,
    SnapshotRequest,
    TuneJobRequest,
)

__all__ = ["RouteContext", "collection_router", "json_response"]


def json_response(payload: dict[str, Any], status_code: int = 200) -> Response:
    """`payload` as a JSON response, encoded by orjson and passed through as is."""
    return Response(orjson.dumps(payload), status_code, media_type="application/json")


@dataclass(frozen=True)
class RouteContext:
    """What every route needs: the engine, the auth dependencies, who writes, where snapshots go."""

    engine: Engine
    require_read: Callable[..., Any]
    require_write: Callable[..., Any]
    forbidden: Callable[[str], Exception]
    who: str
    snapshot_dir: str | None
    jobs: JobRunner | None = None
    import_dir: str | None = None

    def server_path(self, given: str, what: str) -> str:
        """`given` resolved under the import dir; refused outside it (or when there is none)."""
        from pathlib import Path

        if self.import_dir is None:
            raise self.forbidden(f"{what}: server-side paths are off; start the service with --import-dir DIR")
        root = Path(self.import_dir).resolve()
        path = (root / given).resolve()
        if not path.is_relative_to(root):
            raise self.forbidden(f"{what}: {given!r} is outside the service's import dir")
        if not path.exists():
            raise InputError(f"{what}: no such file or directory under the import dir: {given!r}")
        return str(path)

    def runner(self) -> JobRunner:
        if self.jobs is None:
            raise self.forbidden("admin jobs are off in this service (they need an embedded store or a jobs dir)")
        return self.jobs


def collection_router(
    ctx: RouteContext, pick: Callable[..., Any], name_of: Callable[..., Any], tag: str = ""
) -> APIRouter:
    """The routes of one collection; `pick` is the FastAPI dependency resolving it, `name_of` its
    name alone (index jobs may create the collection)."""
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
    async def classify(body: ClassifyBody, clf: Classifier = Depends(pick)) -> Response:
        rule = Rule(**body.rule.model_dump()) if body.rule else None
        fields = [body.fields] if body.fields is not None else []
        where = Where.from_filter(body.filter) if body.filter else None
        req = ClassifyRequest(body.all_texts(), rule, body.k, body.truncate, fields, where)
        res = await engine.classify(req, clf)
        # the library's own dicts, encoded once: validating them again against ClassifyResponse
        # (kept above for the docs; a test holds the two to each other) cost as much as the vote
        return json_response(
            {
                "predictions": [p.to_dict(body.include_neighbours) for p in res.predictions],
                "collection": res.ref.name,
                "version": res.ref.version,
                "encoder": res.encoder,
                "rule": res.rule.to_dict(),
            }
        )

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
        e: Example = await engine.read(clf.get, example_id)
        return e.to_dict()

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
        return e.to_dict()

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

    # --- admin jobs: the commands a user would run, as child processes (knnclass.service.jobs) ---
    admin: list[str | Any] = [f"{tag}admin"]

    @r.post("/jobs/index", tags=admin, dependencies=write, status_code=202)
    async def index_job(body: IndexJobRequest, name: str = Depends(name_of)) -> dict[str, Any]:
        """Bulk-index a file under the service's import dir, in the background; poll GET /v1/jobs/{id}."""
        if body.path is None:
            raise InputError("path: give the file to index (or upload it to .../jobs/index/upload)")
        path = ctx.server_path(body.path, "path")
        maps = [_map_arg(ctx, m) for m in body.label_map or []]
        job = await ctx.runner().submit("index", name, [path, *_index_args(body, maps)])
        return job.to_dict()

    @r.post("/jobs/index/upload", tags=admin, dependencies=write, status_code=202)
    async def index_upload(
        request: Request,
        filename: str,
        name: str = Depends(name_of),
        text_col: Annotated[list[str] | None, Query()] = None,
        label_col: Annotated[list[str] | None, Query()] = None,
        id_col: str | None = None,
        meta_col: Annotated[list[str] | None, Query()] = None,
    ) -> dict[str, Any]:
        """Bulk-index the uploaded file (the request body; `filename`'s extension names its format)."""
        from pathlib import Path

        runner = ctx.runner()
        suffix = "".join(Path(filename).suffixes[-2:]).lower()
        if suffix not in (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".csv.gz", ".jsonl.gz"):
            raise InputError(f"filename: {filename!r}: use .csv, .tsv, .jsonl, .json or .parquet")
        dest = runner.upload_path(suffix)
        size = 0
        with dest.open("wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                f.write(chunk)
        if size == 0:
            dest.unlink()
            raise InputError("the upload is empty")
        opts = IndexJobRequest.model_validate(
            {"text_col": text_col, "label_col": label_col, "id_col": id_col, "meta_col": meta_col}
        )
        job = await runner.submit("index", name, [str(dest), *_index_args(opts, [])])
        return job.to_dict()

    @r.post("/jobs/tune", tags=admin, dependencies=write, status_code=202)
    async def tune_job(body: TuneJobRequest, clf: Classifier = Depends(pick)) -> dict[str, Any]:
        """Re-tune the vote rule (leave-one-out, or on a validation file under the import dir)."""
        args: list[str] = []
        if body.validation is not None:
            args += ["--validation", ctx.server_path(body.validation, "validation")]
        for flag, value in (
            ("--unknown-label", body.unknown_label),
            ("--id-col", body.id_col),
            ("--target-accuracy", body.target_accuracy),
            ("--target-unknown-recall", body.target_unknown_recall),
            ("--target-confidence", body.target_confidence),
            ("--unknown-weight", body.unknown_weight),
            ("--long-text", body.long_text),
        ):
            if value is not None:
                args += [flag, str(value)]
        return (await ctx.runner().submit("tune", clf.collection, args)).to_dict()

    @r.post("/jobs/promote", tags=admin, dependencies=write, status_code=202)
    async def promote_job(body: PromoteJobRequest, clf: Classifier = Depends(pick)) -> dict[str, Any]:
        """Reindex with a fine-tuned run's encoder into a new version, re-tune, switch atomically."""
        run_dir = ctx.server_path(body.run_dir, "run_dir")
        return (await ctx.runner().submit("promote", clf.collection, [run_dir, "--rule", body.rule])).to_dict()

    @r.post("/admin/rollback", tags=admin, dependencies=write)
    async def rollback(clf: Classifier = Depends(pick)) -> dict[str, Any]:
        """Switch back to the previous version (at once; classify follows with its next request)."""
        from ..jobs.reindex import rollback as do_rollback

        d: dict[str, Any] = await engine.write(do_rollback, clf.store, clf.collection)
        return d

    return r


def _map_arg(ctx: RouteContext, spec: str) -> str:
    name, sep, path = spec.partition("=")
    if not sep:
        return ctx.server_path(spec, "label_map")
    return f"{name}={ctx.server_path(path, 'label_map')}"


def _index_args(body: IndexJobRequest, maps: list[str]) -> list[str]:
    args: list[str] = []
    for flag, values in (("--text-col", body.text_col), ("--label-col", body.label_col), ("--meta-col", body.meta_col)):
        for v in values or []:
            args += [flag, v]
    for m in maps:
        args += ["--label-map", m]
    for flag, value in (
        ("--text-template", body.text_template),
        ("--delimiter", body.delimiter),
        ("--id-col", body.id_col),
        ("--clean", body.clean),
        ("--long-text", body.long_text),
        ("--batch-size", body.batch_size),
    ):
        if value is not None:
            args += [flag, str(value)]
    return args
