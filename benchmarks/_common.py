"""Shared benchmark helpers: Banking77 texts, a 100k vector set, percentiles, result files."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "banking77"
RESULTS = REPO / "benchmarks" / "results"

__all__ = ["DATA", "REPO", "RESULTS", "banking_csv", "banking_rows", "expand_vectors", "pct", "save"]


def banking_rows() -> list[dict[str, str]]:
    """Train then test rows of the shipped Banking77 copy."""
    return [*csv.DictReader((DATA / "train.csv").open()), *csv.DictReader((DATA / "test.csv").open())]


def banking_csv(path: Path, n: int, mark: str = "ticket", mark_all: bool = False) -> Path:
    """`n` unique Banking77 tickets (text, category): the training texts, then copies marked
    "(MARK k)"; with `mark_all` every text is marked, so the file shares no text with the others."""
    rows = banking_rows()
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "category"])
        for i in range(n):
            r = rows[i % len(rows)]
            marked = mark_all or i >= len(rows)
            w.writerow([f"{r['text']} ({mark} {i // len(rows)})" if marked else r["text"], r["category"]])
    return path


def expand_vectors(base: np.ndarray, n: int, noise: float = 0.25, seed: int = 0) -> np.ndarray:
    """n unit vectors: `base` first, then deterministic perturbations of it (synthetic variants)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, len(base)):
        m = min(len(base), n - start)
        v = base[:m].copy()
        if start:
            v += rng.standard_normal(v.shape).astype(np.float32) * (noise / np.sqrt(base.shape[1]))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
        out[start : start + m] = v
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def save(name: str, result: dict[str, Any], table: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{name}.md").write_text(table + "\n")
