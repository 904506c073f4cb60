"""An app factory for multi-worker serving: each worker builds its app from KNNCLASS_* env."""

from __future__ import annotations

from fastapi import FastAPI

from ..classifier import open_classifier
from ..settings import Settings
from .app import ServiceSettings, create_app

__all__ = ["app_from_env"]


def app_from_env() -> FastAPI:
    """The service configured from the environment (set by `knnclass serve --workers N`), read once."""
    settings = Settings.from_env()
    return create_app(open_classifier(settings), ServiceSettings.from_settings(settings))
