"""How many CPUs this process may use, and how many the encoder uses."""

from __future__ import annotations

import os

from .errors import InputError

__all__ = ["encoder_threads", "usable_cpus"]


def usable_cpus() -> int:
    """CPUs this process may run on (respects taskset / cpusets where the OS reports them)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 1)


def encoder_threads() -> int:
    """KNNCLASS_THREADS if set (a positive integer), else every usable CPU."""
    from .settings import env

    raw = (env("THREADS") or "").strip()
    if not raw:
        return usable_cpus()
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(f"KNNCLASS_THREADS must be a positive integer, not {raw!r}")
    return int(raw)
