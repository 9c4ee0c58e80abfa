"""Text that can cross the wire: every string the gateway forwards must have a UTF-8 form.

JSON's ``\\uXXXX`` escapes can spell a lone surrogate (``"\\ud800"``), which Python decodes into a ``str``
that no UTF-8 encoder accepts. Such a string must be refused where it enters (a request field, a path id,
a webhook body, a hub argument): accepted, it fails later, far from its source, when the platform call
or a Redis command encodes it. One check, used by every entry point, so the rule cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SURROGATE = re.compile("[\ud800-\udfff]")


def is_sendable(text: str) -> bool:
    """True when ``text`` has a UTF-8 form (it holds no surrogate code point)."""
    # ASCII is by far the common case and costs one C call; otherwise one regex scan.
    return text.isascii() or _SURROGATE.search(text) is None


def all_sendable(texts: Iterable[str]) -> bool:
    """True when every string of ``texts`` is sendable."""
    return all(is_sendable(text) for text in texts)


def unsendable_message(field: str) -> str:
    """What a client is told when ``field`` holds a string that is not valid Unicode."""
    return (f"{field} contains a character that is not valid Unicode (an unpaired surrogate such as "
            "\\ud800); send text that can be encoded as UTF-8.")
