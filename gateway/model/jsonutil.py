"""JSON encoding shared by the HTTP edge: ujson, without escaping ``/`` (URLs must read naturally)."""

from __future__ import annotations

from typing import Any

import ujson


def dumps(value: Any) -> str:
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False)


def dumps_ascii(value: Any) -> str:
    """Compact JSON with every non-ASCII character escaped: for text stored in Redis, which must encode to
    bytes whatever the strings hold (a lone surrogate from a ``\\ud800`` escape has no UTF-8 form)."""
    return ujson.dumps(value, ensure_ascii=True, escape_forward_slashes=False)


def loads(text: str | bytes) -> Any:
    return ujson.loads(text)
