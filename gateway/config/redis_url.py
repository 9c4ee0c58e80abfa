"""``RedisConnectionString``: a redis-py URL, or the StackExchange.Redis form the original middleware used.

Either may name a Redis behind Sentinel: the StackExchange form with ``serviceName=`` (its endpoints are then the
sentinels), or a ``redis+sentinel://`` URL (:mod:`gateway.config.redis_sentinel`), the canonical form kept in
``Settings.redis_url``. Likewise a Redis Cluster: ``cluster=true`` (its endpoints are then seed nodes) or a
``redis+cluster://`` URL (:mod:`gateway.config.redis_cluster`).
"""

from __future__ import annotations

import re
from urllib.parse import quote

from redis.connection import parse_url

from gateway.config.binder import Binder
from gateway.config.errors import ConfigError
from gateway.config.problems import Section
from gateway.config.redis_cluster import CLUSTER_PORT, ClusterTarget, parse_cluster_url
from gateway.config.redis_cluster import SCHEMES as CLUSTER_SCHEMES
from gateway.config.redis_sentinel import SCHEMES as SENTINEL_SCHEMES
from gateway.config.redis_sentinel import (
    SENTINEL_PORT,
    SentinelTarget,
    parse_sentinel_url,
)
from gateway.config.settings import RedisSettings

_STACKEXCHANGE_IGNORED = "ignored (a StackExchange.Redis option the gateway does not use)"


def parse_redis_connection_string(value: str) -> str:
    """Turn ``RedisConnectionString`` into a URL redis-py accepts.

    Accepts URLs (``redis://``, ``rediss://``, ``unix://``) as they are, and the StackExchange.Redis form the
    original used: ``host[:port][,password=...][,user=...][,ssl=true][,defaultDatabase=N][,name=...]``.
    With ``serviceName=...`` the endpoints are sentinels (``sentinel1:26379,sentinel2:26379,serviceName=mymaster``)
    and the result is a ``redis+sentinel://`` URL, as is a ``redis+sentinel://`` URL given directly. With
    ``cluster=true`` the endpoints are seed nodes of a Redis Cluster and the result is a ``redis+cluster://`` URL.
    Other StackExchange options are ignored (:func:`~gateway.config.load_settings` reports them as warnings).

    :param value: the connection string; must not be empty.
    :return: a ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or ``redis+cluster://`` URL.
    :raises ConfigError: when the string cannot be understood.
    """
    url, _warnings, problems = parse_redis("RedisConnectionString", value)
    if problems or url is None:
        raise ConfigError(problems)
    return url


def bind_redis(binder: Binder, top: Section) -> str | None:
    path = top.child_path("RedisConnectionString")
    value = binder.string(path, top.take("RedisConnectionString"))
    if value is None or not value.strip():
        return None
    url, warnings, problems = parse_redis(path, value)
    binder.warnings.extend(warnings)
    binder.problems.extend(problems)
    return url


#: A key prefix: what a hash tag may hold and a person can read in ``SCAN`` output.
_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def bind_redis_section(binder: Binder, section: Section | None) -> RedisSettings:
    """The ``Redis`` section: ``WaitForReplicas``, ``WaitTimeoutMilliseconds`` and ``KeyPrefix``."""
    if section is None:
        return RedisSettings()
    replicas = binder.integer(section.child_path("WaitForReplicas"), section.take("WaitForReplicas"), minimum=0,
                              maximum=16, hint="; 0 does not wait for replicas")
    timeout = binder.integer(section.child_path("WaitTimeoutMilliseconds"), section.take("WaitTimeoutMilliseconds"),
                             minimum=1, maximum=4000, hint="; it must end before the 5 s command timeout")
    prefix_path = section.child_path("KeyPrefix")
    prefix = binder.string(prefix_path, section.take("KeyPrefix"))
    if prefix is not None and not _KEY_PREFIX.fullmatch(prefix):
        binder.problem(prefix_path, f"must be 1 to 32 letters, digits, '_', '-' or '.' (e.g. \"iqra-shop\"), got "
                       f"{prefix!r}; every key and channel name starts with it, and deployments sharing one Redis "
                       "each need their own", prefix)
        prefix = None
    binder.warn_unknown(section)
    defaults = RedisSettings()
    return RedisSettings(wait_for_replicas=defaults.wait_for_replicas if replicas is None else replicas,
                         wait_timeout_ms=defaults.wait_timeout_ms if timeout is None else timeout,
                         key_prefix=defaults.key_prefix if prefix is None else prefix)


def parse_redis(path: str, value: str) -> tuple[str | None, list[str], list[str]]:
    """``(url, warnings, problems)`` for a connection string of either style."""
    text = value.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in SENTINEL_SCHEMES:
        try:
            return parse_sentinel_url(text).url(), [], []
        except ValueError as exc:
            return None, [], [f"{path}: not a valid Sentinel URL ({exc})"]
    if scheme in CLUSTER_SCHEMES:
        try:
            return parse_cluster_url(text).url(), [], []
        except ValueError as exc:
            return None, [], [f"{path}: not a valid Redis Cluster URL ({exc})"]
    if scheme:
        if scheme not in ("redis", "rediss", "unix"):
            return None, [], [(f"{path}: unsupported scheme {scheme!r}; use redis://, rediss://, unix://, "
                                  "redis+sentinel:// or redis+cluster://, or host:port")]
        try:
            parse_url(text)
        except ValueError as exc:
            return None, [], [f"{path}: not a valid Redis URL ({exc})"]
        return text, [], []

    warnings: list[str] = []
    problems: list[str] = []
    endpoints, options = _parts(text)
    password, user, name = options.get("password"), options.get("user"), options.get("name")
    ssl = cluster = False
    database = 0
    for option, setting in options.items():
        if option in ("ssl", "cluster"):
            if setting.lower() not in ("true", "false"):
                problems.append(f"{path}: {option}={setting!r} must be true or false")
            if option == "ssl":
                ssl = setting.lower() == "true"
            else:
                cluster = setting.lower() == "true"
        elif option == "defaultdatabase":
            if not setting.isdigit():
                problems.append(f"{path}: defaultDatabase={setting!r} must be a whole number >= 0")
            else:
                database = int(setting)
        elif option not in ("password", "user", "name", "servicename", "sentinelpassword"):
            warnings.append(f"{path}: option {option}={setting!r} {_STACKEXCHANGE_IGNORED}")
    if not endpoints:
        problems.append(f"{path}: no host; write host:port (e.g. localhost:6379) or a redis:// URL, or leave it empty for the embedded store")
        return None, warnings, problems
    if cluster:
        url = _cluster_url(path, endpoints, options, ssl=ssl, database=database, problems=problems)
        return (None if problems else url), warnings, problems
    if "servicename" in options:
        url = _sentinel_url(path, endpoints, options, ssl=ssl, database=database, problems=problems)
        return (None if problems else url), warnings, problems
    if "sentinelpassword" in options:
        warnings.append(f"{path}: sentinelPassword ignored without serviceName (no sentinels are used)")
    if len(endpoints) > 1:
        warnings.append(f"{path}: several endpoints given; only the first ({endpoints[0]}) is used")
    host, port = _split_endpoint(endpoints[0])
    if port is None:
        problems.append(f"{path}: endpoint {endpoints[0]!r} must be host or host:port with a port between 1 and 65535")
    if problems:
        return None, warnings, problems
    credentials = ""
    if user is not None or password is not None:
        credentials = quote(user or "", safe="") + (":" + quote(password, safe="") if password is not None else "") + "@"
    url = f"{'rediss' if ssl else 'redis'}://{credentials}{host}:{port}/{database}"
    if name:
        url += "?client_name=" + quote(name, safe="")
    return url, warnings, problems


def _sentinel_url(path: str, endpoints: list[str], options: dict[str, str], *, ssl: bool, database: int,
                  problems: list[str]) -> str | None:
    """The ``redis+sentinel://`` URL of a StackExchange string with ``serviceName``: every endpoint is a
    sentinel (port 26379 unless given); ``password``/``user`` log in to the data nodes."""
    service = options["servicename"]
    if not service:
        problems.append(f"{path}: serviceName must name the service the sentinels monitor (e.g. mymaster)")
    sentinels = _endpoint_list(path, endpoints, default_port=SENTINEL_PORT, what="sentinel", problems=problems)
    if problems:
        return None
    return SentinelTarget(sentinels=sentinels, service=service, username=options.get("user"),
                          password=options.get("password"), sentinel_password=options.get("sentinelpassword"),
                          db=database, ssl=ssl, client_name=options.get("name") or None).url()


def _cluster_url(path: str, endpoints: list[str], options: dict[str, str], *, ssl: bool, database: int,
                 problems: list[str]) -> str | None:
    """The ``redis+cluster://`` URL of a StackExchange string with ``cluster=true``: every endpoint is a seed
    node (port 6379 unless given); ``password``/``user`` log in to the nodes."""
    if "servicename" in options:
        problems.append(f"{path}: cluster=true and serviceName name two different deployments (a Redis Cluster "
                        "or a Redis behind Sentinel); keep one")
    if database:
        problems.append(f"{path}: defaultDatabase={database} is not possible on a Redis Cluster (it has only database 0)")
    nodes = _endpoint_list(path, endpoints, default_port=CLUSTER_PORT, what="node", problems=problems)
    if problems:
        return None
    return ClusterTarget(nodes=nodes, username=options.get("user"), password=options.get("password"),
                         ssl=ssl, client_name=options.get("name") or None).url()


def _endpoint_list(path: str, endpoints: list[str], *, default_port: int, what: str,
                   problems: list[str]) -> tuple[tuple[str, int], ...]:
    """``(host, port)`` of each endpoint of a StackExchange string; a bad one is added to ``problems``."""
    found: list[tuple[str, int]] = []
    for endpoint in endpoints:
        host, port = _split_endpoint(endpoint, default_port=default_port)
        if port is None:
            problems.append(f"{path}: {what} {endpoint!r} must be host or host:port with a port between 1 and 65535")
        else:
            found.append((host.strip("[]"), port))
    return tuple(found)


def _parts(text: str) -> tuple[list[str], dict[str, str]]:
    """The endpoints and the ``option=value`` settings (options lower-cased; the last one given wins)."""
    endpoints: list[str] = []
    options: dict[str, str] = {}
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        if "=" not in part:
            endpoints.append(part)
            continue
        option, _, setting = part.partition("=")
        options[option.strip().lower()] = setting.strip()
    return endpoints, options


def _split_endpoint(endpoint: str, *, default_port: int = 6379) -> tuple[str, int | None]:
    """``("host", port)``; a bracketed IPv6 host keeps its brackets for the URL. Port ``None`` = invalid."""
    match = re.fullmatch(r"\[([^\]]+)\](?::([0-9]{1,5}))?|([^:\[\]]+)(?::([0-9]{1,5}))?|([0-9A-Fa-f:]+)", endpoint)
    if match is None:
        return endpoint, None
    if match.group(1) is not None:
        host, port_text = f"[{match.group(1)}]", match.group(2)
    elif match.group(3) is not None:
        host, port_text = match.group(3), match.group(4)
    else:
        host, port_text = f"[{match.group(5)}]", None
    port = default_port if port_text is None else int(port_text)
    return host, port if 0 < port < 65536 else None
