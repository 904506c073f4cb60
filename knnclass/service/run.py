"""Run the service with uvicorn; an embedded store is announced to other local processes."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from ..store.remote import remove_service_file, write_service_file

__all__ = ["new_admin_token", "run"]


def new_admin_token() -> str:
    return secrets.token_urlsafe(32)


def run(app: FastAPI, host: str, port: int, store_root: Path | None, admin_token: str | None, **kw: Any) -> None:
    """Serve `app` until stopped. With `store_root`, ROOT/.service.json names this service (and
    its admin token, owner-only) once it listens, so `knnclass` commands reach the store through it."""
    import uvicorn

    class Server(uvicorn.Server):
        announced: Any = None

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and store_root is not None and admin_token is not None:
                bound = self.servers[0].sockets[0].getsockname()
                address = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
                address = f"[{address}]" if ":" in address else address
                self.announced = write_service_file(store_root, f"http://{address}:{bound[1]}", admin_token)

        async def shutdown(self, sockets: Any = None) -> None:
            # before the requests drain: new commands then wait for the lock instead of reaching
            # a closing service (uvicorn re-raises SIGTERM after serving, so no `finally` runs)
            self._unannounce()
            await super().shutdown(sockets)

        def _unannounce(self) -> None:
            if self.announced is not None and store_root is not None:
                remove_service_file(store_root, self.announced)
                self.announced = None

    server = Server(uvicorn.Config(app, host=host, port=port, **kw))
    try:
        server.run()
    finally:
        server._unannounce()
