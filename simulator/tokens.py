"""Call tokens, as the platform's ``CallWebsocketTokenGenerator`` makes them.

Base64 of a JSON ``{SessionId, ClientId, ExpirationUnix}``, a dot, base64 of its HMAC-SHA256, where the
base64 characters ``=``, ``+`` and ``/`` are spelled ``imtheequal``, ``imtheplus`` and ``imtheslash`` so the
token can sit in a URL path. It is valid for five minutes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import ujson

TOKEN_LIFETIME_SECONDS = 300

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
