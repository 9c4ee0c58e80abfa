"""The benchmark's reference server: ``examples.chat``'s chat hub rebuilt on ``aiosignalr``.

Run it::

    python bench/aiosignalr_server.py --port 8001

It serves ``http://127.0.0.1:PORT/chat`` with the hub methods the benchmark calls, written so their
wire behaviour matches :class:`examples.chat.ChatHub`: ``Echo(x)`` completes with ``x``,
``Broadcast(msg)`` sends ``Message(msg)`` to every connection and completes without a result.
Both servers keep their default keep-alive (15 s) and client timeout (30 s) and run the JSON and
MessagePack protocols, so neither is given an easier job.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
from typing import Any

from aiosignalr.server import Hub, ServerOptions, SignalRServer


class ChatHub(Hub):
    """aiosignalr finds methods by lower-cased name (``Echo`` → ``echo``) and only sends a result
    when the method has a non-``None`` return annotation, hence the ``-> Any`` annotations."""

    async def echo(self, x: Any) -> Any:
        return x

    async def add(self, a: float, b: float) -> Any:
        return a + b

    async def broadcast(self, msg: str) -> None:
        await self.clients.all_.send("Message", msg)

    async def join_group(self, group: str) -> None:
        await self.groups.add(group)

    async def leave_group(self, group: str) -> None:
        await self.groups.remove(group)

    async def send_to_group(self, group: str, msg: str) -> None:
        await self.clients.group(group).send("GroupMessage", group, msg)

    async def get_connection_id(self) -> Any:
        return self.context.connection_id


def raise_open_files_limit() -> int:
    """Lift the soft open-files limit to the hard limit (one descriptor per WebSocket); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


async def serve(port: int) -> None:
    server = SignalRServer(ChatHub, options=ServerOptions())
    await server.serve("127.0.0.1", port, path="/chat")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on http://127.0.0.1:{port}/chat", flush=True)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="aiosignalr chat hub for the SignalR benchmark")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    raise_open_files_limit()
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
