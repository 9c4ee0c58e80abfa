"""A queue entry as the store keeps it: the validated request, the address of the client who sent it, and
when it arrived.

One class owns the stored shape (``{"request": ..., "ip": ..., "queuedAt": ...}``), so the modules that
admit, dispatch, leave or renew an entry never parse its dictionary by hand.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    :param queued_at: wall-clock time the request arrived, in seconds; the process that serves it may be
        another one, on another host, so the wait it measures (202 to ``SessionReady``) assumes the hosts'
        clocks agree (NTP). ``None`` for an entry stored by a version that did not record it.
    """

    request: SessionRequest
    ip: str
    # Stamped here rather than passed in: every entry is made on arrival, and the stamp is only reported
    # (the wait metric), never used to decide anything, so no test needs to control it.
    queued_at: float | None = field(default_factory=time.time)

    def to_data(self) -> dict[str, Any]:
        """The JSON-ready object the store keeps."""
        data: dict[str, Any] = {"request": self.request.to_dict(), "ip": self.ip}
        if self.queued_at is not None:
            data["queuedAt"] = self.queued_at
        return data

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
        return cls(request=request, ip=data["ip"], queued_at=cls.queued_at_of(data))

    @staticmethod
    def queued_at_of(data: Any) -> float | None:
        """When the entry with this stored data arrived, without reading the rest of it; ``None`` when it
        was stored without the time (an older version) or the time is not a number."""
        if not isinstance(data, Mapping):
            return None
        value = data.get("queuedAt")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return float(value)

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
