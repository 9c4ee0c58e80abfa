"""Loading the configuration: read the file, overlay the environment, bind every section, report."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.binder import Binder
from gateway.config.concurrency import bind_concurrency, bind_queue
from gateway.config.edge import bind_forwarded, bind_origins
from gateway.config.instance import bind_instance
from gateway.config.limits import bind_limits
from gateway.config.logging import bind_logging
from gateway.config.metrics import bind_admin, bind_metrics
from gateway.config.problems import Section
from gateway.config.redis_url import bind_redis, bind_redis_section
from gateway.config.security import IPAPI_REPLACED, bind_geoip, bind_security
from gateway.config.source import Node, TreeError, apply_environment, node_from_mapping, read_file
from gateway.config.voice_platform import bind_platform
from gateway.config.errors import ConfigError
from gateway.config.settings import Settings

#: Top-level keys we read; only environment variables under one of these are considered.
TOP_LEVEL_KEYS = (
    "AllowedOrigins",
    "ForwardedHeaders",
    "RedisConnectionString",
    "Redis",
    "VoiceAiPlatform",
    "Concurrency",
    "Queue",
    "Security",
    "GeoIp",
    "Limits",
    "Metrics",
    "Admin",
    "Instance",
    "IpApi",
    "Logging",
    "AllowedHosts",
)


@dataclass(frozen=True, slots=True)
class LoadedSettings:
    """The result of loading: usable settings plus what the operator should look at.

    :param settings: the validated settings.
    :param warnings: one line each, ``"Key.Path: ..."``; log them at start-up.
    """

    settings: Settings
    warnings: tuple[str, ...]


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    data: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Read, merge and validate the configuration.

    :param path: an ``appsettings.json`` file; ``None`` with ``data`` also ``None`` starts from no keys.
    :param data: the parsed file contents instead of ``path`` (for tests and embedding).
    :param environ: environment variables; ``None`` means :data:`os.environ`.
    :return: the settings and the warnings.
    :raises ConfigError: listing every problem found, and the warnings found with them.
    """
    if path is not None and data is not None:
        raise TypeError("load_settings takes a path or data, not both")
    try:
        if path is not None:
            root = read_file(os.fspath(path))
        elif data is not None:
            root = node_from_mapping(data)
        else:
            root = Node()
    except TreeError as exc:
        raise ConfigError(exc.problems) from None
    env_warnings = apply_environment(root, os.environ if environ is None else environ, TOP_LEVEL_KEYS)
    binder = Binder()
    binder.warnings.extend(env_warnings)
    settings = _bind_settings(binder, root)
    if binder.problems or settings is None:
        # The warnings too: a misspelt key is often why a required one is "missing".
        raise ConfigError(binder.problems, warnings=binder.warnings)
    return LoadedSettings(settings=settings, warnings=tuple(binder.warnings))


def _bind_settings(binder: Binder, root: Node) -> Settings | None:
    top = Section(root, "")
    origins = bind_origins(binder, top)
    forwarded = bind_forwarded(binder, binder.section(top, "ForwardedHeaders"))
    redis_url = bind_redis(binder, top)
    redis = bind_redis_section(binder, binder.section(top, "Redis"))
    platform = bind_platform(binder, binder.section(top, "VoiceAiPlatform"))
    queue = bind_queue(binder, binder.section(top, "Queue"))
    geoip = bind_geoip(binder, binder.section(top, "GeoIp"))
    security = bind_security(binder, binder.section(top, "Security"), geoip)
    concurrency = bind_concurrency(binder, binder.section(top, "Concurrency"))
    limits = bind_limits(binder, binder.section(top, "Limits"))
    metrics = bind_metrics(binder, binder.section(top, "Metrics"))
    admin = bind_admin(binder, binder.section(top, "Admin"))
    instance = bind_instance(binder, binder.section(top, "Instance"))
    if top.take("IpApi") is not None:
        binder.warn("IpApi", IPAPI_REPLACED)
    logging = bind_logging(binder, binder.section(top, "Logging"))
    top.take("AllowedHosts")  # ASP.NET host filtering: the reverse proxy's job here.
    binder.warn_unknown(top)
    if platform is None or concurrency is None:
        return None
    return Settings(
        allowed_origins=origins,
        forwarded_headers=forwarded,
        redis_url=redis_url,
        redis=redis,
        platform=platform,
        concurrency=concurrency,
        queue=queue,
        security=security,
        geoip=geoip,
        limits=limits,
        logging=logging,
        metrics=metrics,
        admin=admin,
        instance=instance,
    )
