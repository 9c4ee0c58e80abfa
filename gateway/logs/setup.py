"""The process's log output: one stderr handler with the request id, the repeat throttle and a format.

The format is text unless ``--log-format`` or the configuration's ``Logging.Format`` says ``json``. The
command line is read before the configuration file, so the output starts in the command line's format (or
text) and switches once the file is read, unless the command line chose: the command line wins.
"""

from __future__ import annotations

import logging

from gateway.logs.context import RequestIdFilter
from gateway.logs.formats import JSON, TEXT, JsonLineFormatter, formatter_for
from gateway.logs.throttle import install_repeat_throttle

#: The levels ``--log-level`` accepts, by name.
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _Choice:
    """Whether the command line named a format (then the configuration's is not applied)."""

    from_command_line = False


def configure_logging(level: str, log_format: str | None = None) -> None:
    """Log records at ``level`` and above to stderr.

    :param level: a key of :data:`LOG_LEVELS`.
    :param log_format: ``"text"`` or ``"json"`` from the command line; ``None`` when it named none (text
        until :func:`adopt_configured_format` applies the configuration's).
    """
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    # A Redis outage or a flood repeats one warning per request: one line per kind and interval instead.
    install_repeat_throttle(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LOG_LEVELS[level])
    _Choice.from_command_line = log_format is not None
    use_format(log_format or TEXT)


def adopt_configured_format(log_format: str) -> None:
    """Switch to the configuration's ``Logging.Format``, unless the command line named a format."""
    if not _Choice.from_command_line:
        use_format(log_format)


def use_format(log_format: str) -> None:
    """Write every record of the root logger's handlers in ``log_format`` from now on."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter_for(log_format))
    # In JSON every stderr line must be a record: Python's own warnings become records of "py.warnings".
    logging.captureWarnings(log_format == JSON)


def writes_json() -> bool:
    """Whether the log is in JSON now (then messages for people go through it rather than print)."""
    return any(isinstance(handler.formatter, JsonLineFormatter) for handler in logging.getLogger().handlers)
