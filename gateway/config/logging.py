"""The ``Logging`` section: the log format. The original's ASP.NET ``Logging.LogLevel`` keys are accepted
and ignored without a warning (its files have them); the level is the command line's ``--log-level``."""

from __future__ import annotations

from gateway.config.binder import Binder
from gateway.config.problems import Section
from gateway.config.settings import LoggingSettings
from gateway.logs.formats import LOG_FORMATS


def bind_logging(binder: Binder, section: Section | None) -> LoggingSettings:
    defaults = LoggingSettings()
    if section is None:
        return defaults
    section.take("LogLevel")
    path = section.child_path("Format")
    value = section.take("Format")
    text = binder.string(path, value)
    log_format = defaults.format
    if text is not None:
        if text.strip().lower() in LOG_FORMATS:
            log_format = text.strip().lower()
        else:
            choices = " or ".join(f'"{name}"' for name in LOG_FORMATS)
            binder.problem(path, f"must be {choices}, got {text!r}", value)
    binder.warn_unknown(section)
    return LoggingSettings(format=log_format)
