"""serve: the HTTP service (see knnclass.service)."""

from __future__ import annotations

COMMANDS: list = []
