"""A complete SignalR chat hub — and the reference for how to write one.

Run it from the checkout root::

    python -m examples.chat --port 8000 [--redis redis://localhost:6379/0] [--origin http://localhost:3000]

then connect any SignalR client to ``http://127.0.0.1:8000/chat``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator


from signalr import Hub, HubError, HubOptions
from signalr.hubs.lifetime import HubLifetimeManager
from signalr.tornado import hub_routes, listen


class ChatHub(Hub):
    """Every public method is callable by clients; ``join_group`` is also reachable as ``JoinGroup``
    (names match case-insensitively, like ASP.NET). The return value becomes the invocation result.
    A new hub instance serves each call, so keep per-connection state in ``self.context.items``."""

    def echo(self, x: object) -> object:
        return x

    def add(self, a: float, b: float) -> float:
        # Annotations are checked: ``Add("1", 2)`` fails with the standard binding error.
        return a + b

    async def broadcast(self, msg: str) -> None:
        await self.clients.all.send("Message", msg)

    async def join_group(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    async def leave_group(self, group: str) -> None:
        await self.groups.remove(self.context.connection_id, group)

    async def send_to_group(self, group: str, msg: str) -> None:
        await self.clients.group(group).send("GroupMessage", group, msg)

    async def count(self, n: int) -> AsyncIterator[int]:
        # An async generator is a server-to-client stream; a client cancel stops it here.
        for i in range(n):
            yield i
            await asyncio.sleep(0)

    async def sum(self, stream: AsyncIterator[float]) -> float:
        # An AsyncIterator parameter receives a client-to-server stream (it is not a wire argument).
        total: float = 0
        async for value in stream:
            total += value
        return total

    def fail(self) -> None:
        # HubError text reaches the client; any other exception is logged and hidden.
        raise HubError("Fail was called")

    def get_connection_id(self) -> str:
        return self.context.connection_id


def make_lifetime(redis_url: str | None) -> HubLifetimeManager | None:
    """``None`` selects the in-memory manager; a URL selects the Redis backplane."""
    if redis_url is None:
        return None
    from signalr.redis.lifetime import RedisHubLifetimeManager

    return RedisHubLifetimeManager(redis_url, hub_name="chat")


async def serve(port: int, redis_url: str | None, origins: tuple[str, ...]) -> None:
    routes, server = hub_routes(
        "/chat",
        ChatHub,
        options=HubOptions(allowed_origins=origins, allow_stateful_reconnects=True),
        lifetime_manager=make_lifetime(redis_url),
    )
    stop_listening = listen(routes, port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on http://127.0.0.1:{port}/chat", flush=True)
    await stop.wait()
    # Clients get Close with allowReconnect, so JS clients reconnect to the next instance.
    await server.shutdown()
    stop_listening()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SignalR chat hub example")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", default=None, help="Redis URL for the scale-out backplane")
    parser.add_argument("--origin", action="append", default=[], help="allowed browser origin (repeatable)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.redis, tuple(args.origin)))


if __name__ == "__main__":
    main()
