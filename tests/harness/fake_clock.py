"""A wall clock that only moves when the test says so; injected wherever the code takes ``clock``."""

from __future__ import annotations


class FakeClock:
    """Seconds since the epoch, starting at ``start`` and advanced by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
