"""How browsers and reverse proxies reach the gateway: ``AllowedOrigins`` and ``ForwardedHeaders``."""

from __future__ import annotations

from functools import partial
from typing import Any
from urllib.parse import urlsplit

from gateway.config.binder import Binder
from gateway.config.problems import Section
from gateway.config.settings import ForwardedHeadersSettings


def bind_origins(binder: Binder, top: Section) -> tuple[str, ...]:
    return binder.list_of(top, "AllowedOrigins", partial(_origin, binder))


def _origin(binder: Binder, path: str, value: Any) -> str | None:
    text = binder.string(path, value)
    if text is None:
        return None
    text = text.strip()
    if text == "*":
        return text
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
        binder.problem(path, f"{text!r} is not an origin; write scheme://host[:port], e.g. https://www.example.com, or * for any", value)
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def bind_forwarded(binder: Binder, section: Section | None) -> ForwardedHeadersSettings:
    if section is None:
        return ForwardedHeadersSettings()
    result = ForwardedHeadersSettings(
        known_proxies=binder.list_of(section, "KnownProxies", binder.address),
        known_networks=binder.list_of(section, "KnownNetworks", binder.network),
    )
    binder.warn_unknown(section)
    return result
