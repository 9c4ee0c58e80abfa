"""Who may see into a running gateway: the ``Metrics`` section (the Prometheus endpoint) and the ``Admin``
section (the admin API and its dashboard)."""

from __future__ import annotations

from gateway.config.binder import Binder
from gateway.config.problems import Section
from gateway.config.settings import AdminSettings, MetricsSettings


def bind_metrics(binder: Binder, section: Section | None) -> MetricsSettings:
    if section is None:
        return MetricsSettings()
    port = binder.integer(section.child_path("Port"), section.take("Port"), minimum=1, maximum=65535,
                          hint="; leave it out to serve /metrics on the main port")
    token = _bearer_token(binder, section, "BearerToken")
    binder.warn_unknown(section)
    return MetricsSettings(port=port, bearer_token=token)


#: Shortest admin token accepted: it guards changes to the whole deployment, so it must not be guessable.
MIN_ADMIN_TOKEN_LENGTH = 16


def bind_admin(binder: Binder, section: Section | None) -> AdminSettings:
    if section is None:
        return AdminSettings()
    token = _bearer_token(binder, section, "ApiToken")
    if token and len(token) < MIN_ADMIN_TOKEN_LENGTH:
        binder.problem(section.child_path("ApiToken"), f"must be at least {MIN_ADMIN_TOKEN_LENGTH} characters long "
                       "(for example the output of `openssl rand -hex 24`); leave it out to disable the admin API")
        token = ""
    binder.warn_unknown(section)
    return AdminSettings(api_token=token)


def _bearer_token(binder: Binder, section: Section, key: str) -> str:
    """A token sent as ``Authorization: Bearer <token>``; empty when unset or unusable (a problem is told)."""
    token = binder.string(section.child_path(key), section.take(key))
    if token is not None and token != token.strip():
        # A header value cannot carry the spaces at its ends, so such a token could never match.
        binder.problem(section.child_path(key), "must not start or end with spaces")
        token = None
    return token or ""
