"""What one HTTP connection may cost the server: the ``Limits`` section (timeouts and connection caps)."""

from __future__ import annotations

from gateway.config.binder import Binder
from gateway.config.problems import Section
from gateway.config.settings import LimitsSettings


def bind_limits(binder: Binder, section: Section | None) -> LimitsSettings:
    defaults = LimitsSettings()
    if section is None:
        return defaults

    def seconds(name: str, default: float) -> float:
        value = binder.seconds(section.child_path(name), section.take(name))
        return default if value is None else value

    def count(name: str, default: int) -> int:
        value = binder.integer(section.child_path(name), section.take(name), minimum=0, hint="; use 0 for unlimited")
        return default if value is None else value

    result = LimitsSettings(
        request_headers_timeout_seconds=seconds("RequestHeadersTimeoutSeconds",
                                                defaults.request_headers_timeout_seconds),
        keep_alive_timeout_seconds=seconds("KeepAliveTimeoutSeconds", defaults.keep_alive_timeout_seconds),
        request_body_timeout_seconds=seconds("RequestBodyTimeoutSeconds", defaults.request_body_timeout_seconds),
        max_connections=count("MaxConnections", defaults.max_connections),
        max_connections_per_ip=count("MaxConnectionsPerIp", defaults.max_connections_per_ip),
    )
    if 0 < result.max_connections < result.max_connections_per_ip:
        binder.warn(section.child_path("MaxConnectionsPerIp"),
                    f"({result.max_connections_per_ip}) is above Limits.MaxConnections ({result.max_connections}), "
                    "so it never applies; lower it or raise MaxConnections")
    binder.warn_unknown(section)
    return result
