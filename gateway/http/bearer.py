"""Bearer tokens (``Authorization: Bearer <token>``), shared by ``/metrics`` and the admin API."""

from __future__ import annotations

import hmac


def bearer_matches(header: str, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` as a bearer token (compared in constant time,
    so the time an answer takes says nothing about how much of a guess was right)."""
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(credentials.strip().encode("utf-8", "replace"), token.encode("utf-8"))
