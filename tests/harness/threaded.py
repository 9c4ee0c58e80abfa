"""A gateway stack (:func:`tests.harness.stack.start_stack`) on an event loop of its own thread, for clients
that block: schemathesis sends its requests with ``requests``, which would stall a stack on the test's loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.redis.client import open_redis
from tests.harness.stack import Stack, start_stack

START_TIMEOUT = 30


@contextmanager
def stack_in_thread(**kwargs: Any) -> Iterator[Stack]:
    """A stack on the embedded store, served from a background thread; ``kwargs`` go to ``start_stack``.
    Use only its ``base_url`` (and read-only attributes) from the calling thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway-stack", daemon=True)
    thread.start()

    async def start() -> Stack:
        return await start_stack(open_redis(None), **kwargs)

    async def stop(stack: Stack) -> None:
        await stack.close()
        await stack.gateway.redis.aclose()

    try:
        stack = asyncio.run_coroutine_threadsafe(start(), loop).result(START_TIMEOUT)
        try:
            yield stack
        finally:
            asyncio.run_coroutine_threadsafe(stop(stack), loop).result(START_TIMEOUT)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT)
        loop.close()
