"""How the ticket-shaped test files (id, subject, body, queue, priority, product, created_at) are indexed."""

from __future__ import annotations

TICKET_COLS = ["--text-col", "subject", "--text-col", "body", "--id-col", "id"]
LABEL_SETS = ["--label-col", "queue", "--label-col", "priority"]
META_COLS = ["--meta-col", "product", "--meta-col", "created_at"]
