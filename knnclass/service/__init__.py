"""The HTTP service over the library (FastAPI)."""

from __future__ import annotations

from .app import ServiceSettings, create_app

__all__ = ["ServiceSettings", "create_app"]
