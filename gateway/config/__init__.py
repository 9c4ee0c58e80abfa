"""Load :class:`~gateway.config.settings.Settings` from ``appsettings.json`` and the environment, the ASP.NET way.

The original middleware's file works unchanged: keys match case-insensitively, ``//`` and ``/* */``
comments and trailing commas are allowed (as ASP.NET's JSON provider allows them), and environment
variables override keys with ``__`` between segments (``VoiceAiPlatform__Campaigns__X__AllowedRegionIds__1``).
Values from the environment are strings, converted to each key's type.

Every problem is collected before :class:`ConfigError` is raised, so an operator fixes the file in one pass;
suspicious but workable settings become warnings.

Decisions:

* As in ASP.NET, a number written as a string (``"RateLimitHourly": "3"``) binds, and an id written as a
  number binds to a string; a fraction, or ``true``, where a whole number belongs is an error.
* Without ``Concurrency.MaxConcurrentSessions`` the cap comes from the platform's billing endpoints
  (``SyncFromPlatform`` defaults to true then); with ``SyncFromPlatform: false`` a global cap is required.
  Per-campaign caps do not replace the global one.
* Campaign names are matched case-sensitively in requests (the original bound them into an ordinal
  dictionary), although two names differing only in case are refused in the file.
* ``GeoIp`` database paths must name existing files (relative to the working directory), so a typo stops
  start-up instead of silently disabling anonymizer blocking.

Modules: :mod:`~gateway.config.source` (the file and the environment), :mod:`~gateway.config.problems` and
:mod:`~gateway.config.binder` (key paths, typed readers), one module per group of sections
(:mod:`~gateway.config.edge`, :mod:`~gateway.config.redis_url` with :mod:`~gateway.config.redis_sentinel` and
:mod:`~gateway.config.redis_cluster`,
:mod:`~gateway.config.voice_platform`,
:mod:`~gateway.config.concurrency`, :mod:`~gateway.config.security`, :mod:`~gateway.config.limits`,
:mod:`~gateway.config.metrics`), and
:mod:`~gateway.config.loader`, which runs them in order.
"""

from gateway.config.loader import LoadedSettings, load_settings
from gateway.config.redis_url import parse_redis_connection_string
from gateway.config.errors import ConfigError

__all__ = ["ConfigError", "LoadedSettings", "load_settings", "parse_redis_connection_string"]
