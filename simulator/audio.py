"""The audio side of the platform simulator: the greeting tone and the audio WebSocket.

The socket follows the platform's web transport (transportType 0): binary frames carry PCM in the
session's formats; a failed token check accepts the socket and then closes it with 1008 (policy
violation) and a ``"[code] message"`` reason; the end of the call closes it with 1000.
"""

from __future__ import annotations

import logging
import math
import sys
from array import array
from typing import TYPE_CHECKING

from tornado.websocket import WebSocketClosedError, WebSocketHandler

from simulator.tokens import TokenError

if TYPE_CHECKING:
    from simulator.platform import PlatformSimulator

log = logging.getLogger("simulator.app")

CLOSE_NORMAL = 1000
CLOSE_POLICY_VIOLATION = 1008
#: The platform reads the socket in 8 KB chunks; accept a little more than a generous frame.
MAX_AUDIO_MESSAGE_BYTES = 256 * 1024



def greeting_tone(sample_rate: int, *, seconds: float = 0.6, amplitude: float = 0.3) -> bytes:
    """A two-note chime as PCM16 LE mono at ``sample_rate``, faded in and out so it does not click."""
    total = int(sample_rate * seconds)
    half = total // 2
    fade = max(1, int(sample_rate * 0.01))
    peak = amplitude * 32767
    samples = array("h", bytes(2 * total))
    for i in range(total):
        frequency = 660.0 if i < half else 880.0
        local = i if i < half else i - half
        length = half if i < half else total - half
        envelope = min(1.0, local / fade, (length - local) / fade)
        samples[i] = int(peak * envelope * math.sin(2 * math.pi * frequency * i / sample_rate))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def split_frames(pcm: bytes, *, sample_rate: int, frame_ms: int = 30, bytes_per_sample: int = 2) -> list[bytes]:
    """Cut audio into frames of ``frame_ms`` (the last one may be shorter)."""
    size = max(bytes_per_sample, sample_rate * frame_ms // 1000 * bytes_per_sample)
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


class AudioSocketHandler(WebSocketHandler):
    """``/ws/session/{conversationSessionId}/{websocket|webrtc}/{clientId}/{token}``."""

    def initialize(self, sim: PlatformSimulator) -> None:
        self.sim = sim
        self.call_id: str | None = None

    @property
    def max_message_size(self) -> int:
        return MAX_AUDIO_MESSAGE_BYTES

    def check_origin(self, origin: str) -> bool:
        # Browsers on any demo page connect straight to the platform, as they do to the real one.
        return True

    def open(self, *args: str, **kwargs: str) -> None:
        session_id = kwargs["session_id"]
        try:
            call = self.sim.attach_socket(
                session_id=session_id,
                transport=kwargs["transport"],
                client_id=kwargs["client_id"],
                token=kwargs["token"],
                socket=self,
            )
        except TokenError as exc:
            log.info("audio socket for %s refused: %s", session_id, exc.code)
            self.close(CLOSE_POLICY_VIOLATION, f"[{exc.code}] {exc.message}")
            return
        self.call_id = call.conversation_session_id
        if call.transport_type == 0:
            self._send_greeting(call.output_sample_rate, call.output_encoding_type, call.output_bits_per_sample)

    def _send_greeting(self, sample_rate: int, encoding: int, bits: int) -> None:
        if encoding != 1 or bits != 16:
            # Only PCM16 is generated; other formats get a silent start (echo still works).
            return
        for frame in split_frames(greeting_tone(sample_rate), sample_rate=sample_rate):
            self.send_audio(frame)

    def send_audio(self, frame: bytes) -> None:
        """Send one binary frame and count it; a socket closing meanwhile is not an error."""
        try:
            self.write_message(frame, binary=True)
        except WebSocketClosedError:
            return
        if self.call_id is not None:
            self.sim.count_sent(self.call_id, len(frame))

    def on_message(self, message: str | bytes) -> None:
        if self.call_id is None:
            return
        if isinstance(message, bytes):
            self.sim.count_received(self.call_id, len(message))
            self.send_audio(message)
        # Text frames are accepted and ignored, as the platform does.

    def on_close(self) -> None:
        if self.call_id is not None:
            self.sim.socket_closed(self.call_id, self)

    def end(self, reason: str) -> None:
        """Close from the platform side because the call ended."""
        self.close(CLOSE_NORMAL, reason[:120])
