"""The audio side of a simulated visitor: the platform's WebSocket, a few PCM frames each way, a hang-up.

The platform's web transport (transportType 0) carries binary frames of PCM in the session's formats; the
widget sends 20 ms frames of 16-bit little-endian PCM from the microphone and plays what comes back. A
simulated visitor sends a quiet tone at the same pace, counts what the agent sends, and hangs up by closing
the socket with 1000, as the widget's Hang up button does.
"""

from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass

import gevent
import websocket

#: The widget's frame length.
FRAME_MS = 20


def tone_frame(sample_rate: int, *, frequency: float = 440.0, amplitude: float = 0.05) -> bytes:
    """One ``FRAME_MS`` frame of a quiet sine as PCM16 LE mono (a whole number of periods is not needed)."""
    count = sample_rate * FRAME_MS // 1000
    peak = amplitude * 32767
    return struct.pack(f"<{count}h", *(int(peak * math.sin(2 * math.pi * frequency * i / sample_rate))
                                       for i in range(count)))


@dataclass
class CallResult:
    """What one call exchanged. Times are seconds on ``time.perf_counter``'s clock."""

    connect_seconds: float = 0.0
    first_frame_seconds: float | None = None
    frames_sent: int = 0
    frames_received: int = 0
    bytes_received: int = 0
    #: Why the server ended the call before the hang-up, if it did ("1008 [code] message" and the like).
    ended_by_server: str | None = None
    #: The close code the server sent when it ended the call (1000 when the platform ended it normally).
    server_close_code: int | None = None


class AudioCall:
    """One call on the platform's audio WebSocket.

    :param url: the ``webSocketUrl`` the gateway handed out.
    :param sample_rate: the ``inputSampleRate`` of the session request.
    :param headers: extra headers for the WebSocket request; without ``Origin`` none is sent.
    :param timeout: seconds for the connect.
    """

    def __init__(self, url: str, *, sample_rate: int, headers: dict[str, str] | None = None,
                 timeout: float = 10.0) -> None:
        self.url = url
        self.sample_rate = sample_rate
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.result = CallResult()
        self._socket: websocket.WebSocket | None = None
        self._reader: gevent.Greenlet | None = None
        self._opened_at = 0.0

    def run(self, *, frames: int, hold_seconds: float) -> CallResult:
        """Connect, send ``frames`` frames in real time, stay ``hold_seconds`` longer, hang up."""
        started = time.perf_counter()
        self._socket = websocket.create_connection(self.url, timeout=self.timeout, header=self.headers,
                                                   suppress_origin="Origin" not in self.headers)
        self._opened_at = time.perf_counter()
        self.result.connect_seconds = self._opened_at - started
        self._socket.settimeout(None)
        self._reader = gevent.spawn(self._read)
        frame = tone_frame(self.sample_rate)
        for _ in range(frames):
            if self.result.ended_by_server:
                break
            try:
                self._socket.send_binary(frame)
            except (OSError, websocket.WebSocketException):
                break  # the reader reports why the server ended the call
            self.result.frames_sent += 1
            gevent.sleep(FRAME_MS / 1000)  # a microphone's pace, not a synchronisation
        if hold_seconds > 0 and not self.result.ended_by_server:
            self._reader.join(timeout=hold_seconds)  # listening; returns early if the server ends the call
        self.hang_up()
        return self.result

    def hang_up(self) -> None:
        """Close with 1000 (the call ends on the platform, which tells the gateway) and stop reading."""
        if self._reader is not None:
            # First: close() reads the server's answering close frame itself, and one socket has one reader.
            self._reader.kill(block=True)
        if self._socket is not None and self._socket.connected:
            try:
                self._socket.close(status=websocket.STATUS_NORMAL, reason=b"user hung up", timeout=2)
            except (OSError, websocket.WebSocketException):
                pass  # already gone: the hang-up happened either way

    def _read(self) -> None:
        socket = self._socket
        while True:
            try:
                opcode, data = socket.recv_data(control_frame=False)
            except websocket.WebSocketConnectionClosedException:
                self._server_ended("the connection closed without a close frame")
                return
            except (OSError, websocket.WebSocketException) as exc:
                self._server_ended(f"the connection broke: {exc}")
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                self.result.server_close_code = code
                self._server_ended(f"{code} {data[2:].decode('utf-8', 'replace')}".strip())
                return
            if opcode == websocket.ABNF.OPCODE_BINARY:
                if self.result.first_frame_seconds is None:
                    self.result.first_frame_seconds = time.perf_counter() - self._opened_at
                self.result.frames_received += 1
                self.result.bytes_received += len(data)

    def _server_ended(self, reason: str) -> None:
        if self.result.ended_by_server is None:
            self.result.ended_by_server = reason
