"""A queue entry as the store keeps it: the validated request and the address of the client who sent it.

One class owns the stored shape (``{"request": ..., "ip": ...}``), so the modules that admit, dispatch,
leave or renew an entry never parse its dictionary by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.model import jsonutil
from gateway.model.errors import PayloadError
from gateway.model.request import SessionRequest


class DamagedEntry(ValueError):
    """Stored entry data that is not an entry (truncated, tampered with, or from an incompatible version)."""


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """What a queued request carries in the store.

    :param request: the validated session request.
    :param ip: the client's address (the platform receives it in ``ClientIdentifier``; per-IP limits count it).
    """

    request: SessionRequest
    ip: str

    def to_data(self) -> dict[str, Any]:
        """The JSON-ready object the store keeps."""
        return {"request": self.request.to_dict(), "ip": self.ip}

    def to_json(self) -> str:
        """The stored text: ASCII-escaped, so whatever the strings hold, it encodes to bytes."""
        return jsonutil.dumps_ascii(self.to_data())

    @classmethod
    def from_data(cls, data: Any) -> QueueEntry:
        """Read back :meth:`to_data`; the request's rules are checked again.

        :raises DamagedEntry: when ``data`` is not an entry.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("ip"), str):
            raise DamagedEntry("a queue entry must be an object with a request and an ip")
        try:
            request = SessionRequest.from_dict(data.get("request"))  # type: ignore[arg-type]
        except PayloadError as exc:
            raise DamagedEntry(f"the queued request is not valid: {exc.message}") from None
        return cls(request=request, ip=data["ip"])

    @classmethod
    def from_json(cls, raw: str | bytes) -> QueueEntry:
        """Read back :meth:`to_json`.

        :raises DamagedEntry: when ``raw`` is not an entry.
        """
        try:
            data = jsonutil.loads(raw)
        except ValueError:
            raise DamagedEntry("the queue entry is not JSON") from None
        return cls.from_data(data)
