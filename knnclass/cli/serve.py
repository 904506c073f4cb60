"""serve: the HTTP service (see knnclass.service)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ..classifier import open_classifier
from ..errors import InputError
from ._common import encoder_option, settings_from, store_options


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes; more than one needs the server backend (--qdrant-url).",
)
@click.option(
    "--max-in-flight",
    default=None,
    type=click.IntRange(1, 100_000),
    help="Requests in progress beyond which /v1 answers 429 [default: 2 per usable CPU].",
)
@click.option(
    "--batch-wait-ms",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 100),
    help="Extra wait to gather concurrent classify calls into one encoder batch.",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option(
    "--snapshot-dir",
    envvar="KNNCLASS_SNAPSHOT_DIR",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Directory POST /v1/admin/snapshot writes into (write key needed); unset: the route is off.",
)
@click.option(
    "--import-dir",
    envvar="KNNCLASS_IMPORT_DIR",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Server-side directory admin jobs may read files from (index, tune --validation, promote run dirs).",
)
@encoder_option
@store_options
def serve(
    host: str,
    port: int,
    workers: int,
    max_in_flight: int | None,
    batch_wait_ms: float,
    log_level: str,
    snapshot_dir: Path | None,
    import_dir: Path | None,
    encoder_dir: Path | None,
    **so: Any,
) -> None:
    """Serve classify and live example edits over HTTP (OpenAPI docs at /docs).

    Writes need KNNCLASS_API_KEY when it is set; classify takes it or KNNCLASS_READ_KEY.
    """
    import uvicorn

    from ..service import ServiceSettings, create_app
    from ..service.run import new_admin_token
    from ..service.run import run as run_service

    if workers > 1 and not so.get("qdrant_url"):
        raise InputError(
            "--workers > 1 needs the server backend (--qdrant-url): the embedded store can be opened by one "
            "process only; one worker already batches concurrent requests"
        )
    from ..store.remote import RemoteStore

    base = settings_from(encoder_dir=encoder_dir, **so).with_(
        max_in_flight=max_in_flight,
        batch_wait_ms=batch_wait_ms,
        snapshot_dir=str(snapshot_dir) if snapshot_dir else None,
        import_dir=str(import_dir) if import_dir else None,
    )
    embedded = not base.qdrant_url
    settings = ServiceSettings.from_settings(
        base,
        admin_token=new_admin_token() if embedded else None,
        # admin jobs are recorded beside an embedded store (their children reach it through us)
        jobs_dir=str(Path(base.store).expanduser().resolve() / "jobs") if embedded else None,
    )
    clf = open_classifier(base)  # the settings read once above
    if isinstance(clf.store, RemoteStore):
        raise InputError(f"{so['store']} is already served by another `knnclass serve`; stop that one first")
    clf.ref()  # fail now, with a clear message, if the collection is missing
    click.echo(f"serving {so['collection']} on http://{host}:{port} (docs at /docs)", err=True)
    run: dict[str, Any] = {"log_level": log_level, "timeout_graceful_shutdown": 30, "access_log": False}
    if workers > 1:  # each worker process builds its own app from the settings, passed on in its environment
        clf.store.close()
        os.environ.update(base.to_env())
        uvicorn.run("knnclass.service.factory:app_from_env", factory=True, workers=workers, host=host, port=port, **run)
        return
    root = getattr(clf.store, "root", None) if settings.admin_token else None
    run_service(create_app(clf, settings), host, port, root, settings.admin_token, **run)


COMMANDS = [serve]
