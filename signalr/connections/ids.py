"""Connection ids and tokens.

Both are 16 random bytes, base64url without padding (22 characters) like ASP.NET: URL-safe because
the JS client concatenates ``id=<token>`` without escaping.
"""

from __future__ import annotations

import secrets

ID_BYTES = 16

# A per-process prefix of connection ids and tokens (see :func:`set_id_prefix`); empty by default.
_id_prefix = ""


def set_id_prefix(prefix: str) -> None:
    """Start every connection id and token of this process with ``prefix`` (URL-safe, e.g. ``"3."``).

    A front process that shares one port between several worker processes reads it from ``id=`` to
    send each request of a connection to the worker that holds it. Ids get it too, not only tokens:
    negotiate version 0 clients (and skip-negotiation) send the connection id as ``id=``. The prefix is
    added in front of the 16 random bytes, so it takes nothing from what an attacker must guess.
    """
    global _id_prefix
    _id_prefix = prefix


def new_connection_id() -> str:
    """Return a fresh public connection id."""
    return _id_prefix + secrets.token_urlsafe(ID_BYTES)


def new_connection_token() -> str:
    """Return a fresh private connection token (what clients put in ``id=``)."""
    return _id_prefix + secrets.token_urlsafe(ID_BYTES)
