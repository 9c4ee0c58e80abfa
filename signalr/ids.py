"""Connection ids and tokens.

Both are 16 random bytes, base64url without padding (22 characters) like ASP.NET: URL-safe because
the JS client concatenates ``id=<token>`` without escaping.
"""

from __future__ import annotations

import secrets

ID_BYTES = 16


def new_connection_id() -> str:
    """Return a fresh public connection id."""
    return secrets.token_urlsafe(ID_BYTES)


def new_connection_token() -> str:
    """Return a fresh private connection token (what clients put in ``id=``)."""
    return secrets.token_urlsafe(ID_BYTES)
