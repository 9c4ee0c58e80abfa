"""Who may read the Prometheus metrics, and where: the ``Metrics`` section."""

from __future__ import annotations

from gateway.config.binder import Binder
from gateway.config.problems import Section
from gateway.config.settings import MetricsSettings


def bind_metrics(binder: Binder, section: Section | None) -> MetricsSettings:
    if section is None:
        return MetricsSettings()
    port = binder.integer(section.child_path("Port"), section.take("Port"), minimum=1, maximum=65535,
                          hint="; leave it out to serve /metrics on the main port")
    token = binder.string(section.child_path("BearerToken"), section.take("BearerToken"))
    if token is not None and token != token.strip():
        # A header value cannot carry the spaces at its ends, so such a token could never match.
        binder.problem(section.child_path("BearerToken"), "must not start or end with spaces")
        token = None
    binder.warn_unknown(section)
    return MetricsSettings(port=port, bearer_token=token or "")
