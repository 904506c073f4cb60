"""Serving goes first: store work done for other processes runs in the gaps between requests."""

from __future__ import annotations

import threading

__all__ = ["Foreground"]


class Foreground:
    """Counts the serving requests in progress; `wait` holds a background thread while any is.

    Entered and left on the event loop (a request's whole life, from its complete body to its
    last byte sent) and by the engine (a classify call from the library); waited on by the
    store route between its slices, which then never compete with a request for the GIL."""

    def __init__(self) -> None:
        self._n = 0
        self._mu = threading.Lock()
        self._quiet = threading.Event()
        self._quiet.set()

    def enter(self) -> None:
        with self._mu:
            self._n += 1
            self._quiet.clear()

    def leave(self) -> None:
        with self._mu:
            if self._n == 0:  # a caller's enter/leave pairing is broken: say so, never count below zero
                raise RuntimeError("Foreground.leave without a matching enter")
            self._n -= 1
            if self._n == 0:
                self._quiet.set()

    def wait(self, max_wait_s: float = 0.05) -> None:
        """Return once no request is in progress, or after `max_wait_s` (background work must
        still move under a saturating load)."""
        self._quiet.wait(max_wait_s)
