"""The request id in every log line written while a request is handled.

Handlers set the id once per request; a logging filter copies it onto each record, so a person reading
the log can follow one request through the handler, the admission decision and the platform call.
Outside a request (timers, the dispatcher) the field reads ``-``.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

#: The request id of records written outside any request.
NO_REQUEST = "-"

current_request_id: ContextVar[str] = ContextVar("current_request_id", default=NO_REQUEST)

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current request's id, or ``-``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        return True

