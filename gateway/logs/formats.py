"""How a log record is written: the text line people read, or one JSON object per line for log collectors.

The JSON form is python-json-logger's formatter with fixed field names, so a collector (Loki, Elastic,
CloudWatch...) can index every line the same way::

    {"time": "2025-01-31T12:00:00.123Z", "level": "INFO", "logger": "gateway.access",
     "message": "200 POST /api/session/request 4.1ms ...", "request_id": "9f2c...", ...}

``time`` is ISO 8601 in UTC whatever the machine's zone, ``request_id`` is ``null`` outside a request, and
every field a call site passes with ``extra=`` follows as a field of its own (a throttle summary carries
``repeat_summary`` and ``suppressed``). An exception is the field ``exception`` (its formatted traceback),
so it stays on the record's one line instead of spilling lines no collector can attribute.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from gateway.logs.context import LOG_FORMAT, NO_REQUEST

TEXT = "text"
JSON = "json"
#: The formats ``--log-format`` and ``Logging.Format`` accept; text is the default.
LOG_FORMATS = (TEXT, JSON)

#: The record attributes every JSON line starts with, in this order, and the names they are written under.
_FIELDS = {"asctime": "time", "levelname": "level", "name": "logger", "message": "message",
           "request_id": "request_id"}
_RENAMED = {**_FIELDS, "exc_info": "exception", "stack_info": "stack"}


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record, with the fields described in the module's docstring."""

    def __init__(self) -> None:
        super().__init__(" ".join(f"%({name})s" for name in _FIELDS), rename_fields=_RENAMED)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        moment = datetime.fromtimestamp(record.created, tz=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        if log_data.get("request_id") == NO_REQUEST:
            log_data["request_id"] = None  # a collector can then select "no request" without a magic string
        return log_data


def formatter_for(name: str) -> logging.Formatter:
    """The formatter of a format in :data:`LOG_FORMATS`."""
    if name == JSON:
        return JsonLineFormatter()
    if name == TEXT:
        return logging.Formatter(LOG_FORMAT)
    raise ValueError(f"unknown log format {name!r}; use one of {', '.join(LOG_FORMATS)}")
