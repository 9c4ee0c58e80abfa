"""The parts the multi-host Redis URLs (Sentinel, Cluster) share: a ``host[:port]`` endpoint and the login."""

from __future__ import annotations

import re
from urllib.parse import quote


def parse_endpoint(text: str, *, default_port: int, what: str) -> tuple[str, int]:
    """``(host, port)`` of ``host[:port]`` or ``[v6][:port]`` (the host without brackets).

    :param what: the endpoint's kind in messages (``sentinel``, ``node``).
    :raises ValueError: it is neither, or its port is out of range.
    """
    match = re.fullmatch(r"\[([^\]]+)\](?::([0-9]{1,5}))?|([^:\[\]]+)(?::([0-9]{1,5}))?", text.strip())
    if match is None:
        raise ValueError(f"{what} {text.strip()!r} must be host or host:port")
    host = match.group(1) if match.group(1) is not None else match.group(3)
    port_text = match.group(2) if match.group(1) is not None else match.group(4)
    port = default_port if port_text is None else int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"{what} {text.strip()!r} needs a port between 1 and 65535")
    return host, port


def credentials_part(username: str | None, password: str | None) -> str:
    """``user:password@`` (each quoted; either may be absent) for a URL, or empty without a login."""
    if username is None and password is None:
        return ""
    text = quote(username or "", safe="")
    if password is not None:
        text += ":" + quote(password, safe="")
    return text + "@"


def bracketed(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host
