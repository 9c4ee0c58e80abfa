"""The audio side of the platform simulator: call tokens, the greeting tone, and the audio WebSocket.

The token imitates the platform's ``CallWebsocketTokenGenerator``: base64 of a JSON
``{SessionId, ClientId, ExpirationUnix}``, a dot, base64 of its HMAC-SHA256, where the base64 characters
``=``, ``+`` and ``/`` are spelled ``imtheequal``, ``imtheplus`` and ``imtheslash`` so the token can sit in a
URL path. It is valid for five minutes.

The socket follows the platform's web transport (transportType 0): binary frames carry PCM in the
session's formats; a failed token check accepts the socket and then closes it with 1008 (policy
violation) and a ``"[code] message"`` reason; the end of the call closes it with 1000.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import sys
from array import array
from typing import TYPE_CHECKING

import ujson
from tornado.websocket import WebSocketClosedError, WebSocketHandler

if TYPE_CHECKING:
    from simulator.app import PlatformSimulator

log = logging.getLogger("simulator.app")

TOKEN_LIFETIME_SECONDS = 300
CLOSE_NORMAL = 1000
CLOSE_POLICY_VIOLATION = 1008
#: The platform reads the socket in 8 KB chunks; accept a little more than a generous frame.
MAX_AUDIO_MESSAGE_BYTES = 256 * 1024

_B64_SPELLING = (("=", "imtheequal"), ("+", "imtheplus"), ("/", "imtheslash"))


class TokenError(Exception):
    """A call token was malformed, forged, expired, or for another call. ``code`` is a short word."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _encode_b64(raw: bytes) -> str:
    text = base64.b64encode(raw).decode("ascii")
    for char, word in _B64_SPELLING:
        text = text.replace(char, word)
    return text


def _decode_b64(text: str) -> bytes:
    for char, word in _B64_SPELLING:
        text = text.replace(word, char)
    return base64.b64decode(text.encode("ascii"), validate=True)


def sign_call_token(secret: bytes, *, session_id: str, client_id: str, expires_unix: int) -> str:
    """A token that lets ``client_id`` join ``session_id`` until ``expires_unix``."""
    payload = ujson.dumps(
        {"SessionId": session_id, "ClientId": client_id, "ExpirationUnix": int(expires_unix)}
    ).encode()
    signature = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_encode_b64(payload)}.{_encode_b64(signature)}"


def verify_call_token(secret: bytes, token: str, *, session_id: str, client_id: str, now: float) -> None:
    """Check a token against the URL it came with.

    :raises TokenError: with code ``TOKEN_MALFORMED``, ``TOKEN_SIGNATURE``, ``TOKEN_EXPIRED`` or
        ``TOKEN_MISMATCH``.
    """
    payload_text, dot, signature_text = token.partition(".")
    if not dot:
        raise TokenError("TOKEN_MALFORMED", "Token is malformed.")
    try:
        payload = _decode_b64(payload_text)
        signature = _decode_b64(signature_text)
    except (ValueError, UnicodeEncodeError):
        raise TokenError("TOKEN_MALFORMED", "Token is malformed.") from None
    if not hmac.compare_digest(hmac.new(secret, payload, hashlib.sha256).digest(), signature):
        raise TokenError("TOKEN_SIGNATURE", "Token signature is invalid.")
    try:
        claims = ujson.loads(payload)
    except ValueError:
        raise TokenError("TOKEN_MALFORMED", "Token is malformed.") from None
    if not isinstance(claims, dict) or not isinstance(claims.get("ExpirationUnix"), int):
        raise TokenError("TOKEN_MALFORMED", "Token is malformed.")
    if claims["ExpirationUnix"] <= now:
        raise TokenError("TOKEN_EXPIRED", "Token has expired.")
    if claims.get("SessionId") != session_id or claims.get("ClientId") != client_id:
        raise TokenError("TOKEN_MISMATCH", "Token does not match this session.")


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
