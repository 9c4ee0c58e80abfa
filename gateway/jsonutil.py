"""JSON encoding shared by the HTTP edge: ujson, without escaping ``/`` (URLs must read naturally)."""

from __future__ import annotations

from typing import Any

import ujson


def dumps(value: Any) -> str:
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False)


def loads(text: str | bytes) -> Any:
    return ujson.loads(text)
