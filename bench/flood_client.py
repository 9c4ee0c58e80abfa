"""The flooding client and the measurements of ``bench/bench_hub_flood.py``.

The client is raw sockets: an upgrade to a WebSocket (no negotiation), the JSON handshake, then masked
frames of ~32 KiB of ``Register`` invocations, written until a budget is spent, while nothing the server
sends is ever read. The measurements: a process's ``VmRSS``, ``/healthz`` latencies (taken by this file
run as a script, a process of its own, so that the flooding clients' work does not delay it), and Redis
``INFO commandstats`` counts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RS = b"\x1e"
HANDSHAKE = b'{"protocol":"json","version":1}' + RS
FRAME_BYTES = 32 * 1024  # under the 64 KiB transport buffer: every frame is a valid one


# -- the client -----------------------------------------------------------------------------------------


def ws_frame(payload: bytes) -> bytes:
    """One masked text frame (mask 0: XOR with zeros leaves the payload as it is)."""
    length = len(payload)
    if length < 126:
        head = bytes((0x81, 0x80 | length))
    elif length < 1 << 16:
        head = bytes((0x81, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + length.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def flood_frame(request_id: str = "00000000-0000-4000-8000-000000000000", *, answers: bool = False) -> bytes:
    """A frame of ``Register(request_id)`` invocations. With ``answers`` each carries an invocation id, so
    the server owes (and writes) a completion for each, which the client never reads; without, none."""
    invocation_id = b'"invocationId":"1",' if answers else b""
    invocation = (b'{"type":1,' + invocation_id + b'"target":"Register","arguments":["'
                  + request_id.encode() + b'"]}' + RS)
    return ws_frame(invocation * (FRAME_BYTES // len(invocation)))


async def open_hub_socket(port: int, path: str) -> socket.socket:
    """A raw socket upgraded to a WebSocket on the hub at ``path``, handshake sent, reading nothing more."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await loop.sock_recv(sock, 1)  # byte by byte: leave the handshake answer unread
        if not chunk:
            raise RuntimeError("the server closed during the upgrade")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"upgrade refused: {head!r}")
    await loop.sock_sendall(sock, ws_frame(HANDSHAKE))
    return sock


async def flood(sock: socket.socket, frame: bytes, budget: int, written: list[int], index: int) -> None:
    loop = asyncio.get_running_loop()
    while written[index] < budget:
        await loop.sock_sendall(sock, frame)
        written[index] += len(frame)


async def oversized_frame(port: int, path: str) -> tuple[int, int | None]:
    """Send a 10 MB frame; returns the bytes written before the server refused it, and its close code."""
    loop = asyncio.get_running_loop()
    sock = await open_hub_socket(port, path)
    message = memoryview(ws_frame(b"x" * 10_000_000))
    progress = [0]

    async def send() -> None:
        for start in range(0, len(message), 65536):
            await loop.sock_sendall(sock, message[start:start + 65536])
            progress[0] = min(len(message), start + 65536)

    sender = asyncio.ensure_future(send())
    data = b""
    code = None
    try:
        while code is None:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
            if not chunk:
                break
            data += chunk
            code = close_code(data)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        sock.close()
    return progress[0], code


def close_code(data: bytes) -> int | None:
    """The code of the first close frame in ``data`` (unmasked server frames), if one is complete."""
    offset = 0
    while offset + 2 <= len(data):
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        header = 2
        if length == 126:
            length, header = int.from_bytes(data[offset + 2:offset + 4], "big"), 4
        elif length == 127:
            length, header = int.from_bytes(data[offset + 2:offset + 10], "big"), 10
        if offset + header + length > len(data):
            return None
        if opcode == 0x8:
            return int.from_bytes(data[offset + header:offset + header + 2], "big")
        offset += header + length
    return None


# -- memory ---------------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def sample_rss(pid: int, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(rss_kib(pid))
        await asyncio.sleep(0.05)


# -- /healthz ---------------------------------------------------------------------------------------------


def probe_health(port: int, seconds: float) -> list[float]:
    """GET /healthz every 20 ms for ``seconds``, each on a fresh connection; latencies in ms from
    connect to the whole answer."""
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        latencies.append((time.perf_counter() - started) * 1000)
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"/healthz answered {answer[:40]!r}")
        time.sleep(0.02)
    return latencies


async def start_probe(port: int, seconds: float) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--port", str(port), "--seconds", str(seconds), stdout=asyncio.subprocess.PIPE,
    )


async def probe_result(process: asyncio.subprocess.Process) -> list[float]:
    out, _ = await process.communicate()
    return list(json.loads(out))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# -- Redis ------------------------------------------------------------------------------------------------


async def command_calls(redis_client: Any, commands: Iterable[str]) -> int:
    """The sum of the calls of ``commands`` (lower-case names) so far, from ``INFO commandstats``."""
    stats = await redis_client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in commands)


async def redis_quiet_after(redis_client: Any, commands: Iterable[str], since: float, quiet: float = 2.0,
                            limit: float = 60.0) -> float:
    """Seconds from ``since`` to the last change of the calls of ``commands``, once they held still for
    ``quiet`` s (polled every 10 ms)."""
    commands = tuple(commands)
    last_value = await command_calls(redis_client, commands)
    last_change = since
    while True:
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        value = await command_calls(redis_client, commands)
        if value != last_value:
            last_value, last_change = value, now
        elif now - last_change >= quiet or now - since > limit:
            return last_change - since


if __name__ == "__main__":  # the /healthz prober, as a process of its own
    parser = argparse.ArgumentParser(description="GET /healthz for a while; prints the latencies (ms) as JSON")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    options = parser.parse_args()
    print(json.dumps(probe_health(options.port, options.seconds)))
