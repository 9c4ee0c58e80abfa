"""Connection ids and tokens.

Both are 16 random bytes, base64url without padding (22 characters) like ASP.NET: URL-safe because
the JS client concatenates ``id=<token>`` without escaping. An endpoint may start both with a fixed
prefix (``HubOptions.connection_id_prefix``); it is added in front of the random bytes, so it takes
nothing from what an attacker must guess.
"""

from __future__ import annotations

import secrets

ID_BYTES = 16


def new_connection_id(prefix: str = "") -> str:
    """Return a fresh public connection id starting with ``prefix``."""
    return prefix + secrets.token_urlsafe(ID_BYTES)


def new_connection_token(prefix: str = "") -> str:
    """Return a fresh private connection token (what clients put in ``id=``) starting with ``prefix``."""
    return prefix + secrets.token_urlsafe(ID_BYTES)
