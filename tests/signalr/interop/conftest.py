"""The example hub (``python -m examples.chat``) as a process of its own, one per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.interop import ExampleServer


@pytest.fixture(scope="module")
def example() -> Iterator[ExampleServer]:
    with ExampleServer() as server:
        yield server
