"""The parts the multi-host Redis URLs (Sentinel, Cluster) share: a ``host[:port]`` endpoint and the login."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote


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


@dataclass(frozen=True, slots=True)
class MultiHostUrl:
    """The parts of ``scheme://[user[:password]@]host[:port][,host[:port]...][/path][?options]``."""

    tls: bool
    username: str | None
    password: str | None
    endpoints: tuple[tuple[str, int], ...]
    path: str
    options: dict[str, str]


def split_multi_host_url(url: str, *, schemes: tuple[str, str], kind: str, what: str, default_port: int,
                         known_options: tuple[str, ...]) -> MultiHostUrl:
    """Read the parts every multi-host URL shares; the path is left to the caller.

    :param schemes: the plain and the TLS scheme.
    :param kind: the URL's kind in messages (``Sentinel``, ``cluster``).
    :param what: an endpoint's kind in messages (``sentinel``, ``node``).
    :raises ValueError: with what is wrong (the scheme, an endpoint, an unknown option); no endpoint is the
        caller's to refuse, in its own words.
    """
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() not in schemes:
        raise ValueError(f"a {kind} URL starts with {schemes[0]}:// or {schemes[1]}://")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    credentials, at, hosts_text = netloc.rpartition("@")
    username = password = None
    if at:
        user_text, colon, password_text = credentials.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    endpoints = tuple(parse_endpoint(part, default_port=default_port, what=what)
                      for part in hosts_text.split(",") if part.strip())
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(known_options))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(known_options)}")
    return MultiHostUrl(tls=scheme.lower() == schemes[1], username=username, password=password,
                        endpoints=endpoints, path=path, options=options)
