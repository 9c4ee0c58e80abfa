"""A Redis reached through Sentinel: the sentinels to ask, the service they watch, how to log in.

redis-py has no URL for Sentinel, so the gateway defines one, and it is the canonical form
``Settings.redis_url`` holds for such a deployment (a StackExchange.Redis string with ``serviceName=`` is
turned into it)::

    redis+sentinel://[[user]:password@]host1[:26379][,host2[:26379]...]/service[/db][?option=value&...]

``rediss+sentinel://`` uses TLS for every connection (sentinels and data nodes). The credentials log in to
the primary (the data nodes); the sentinels get a password only from the ``sentinel_password`` option.
Other options: ``client_name``. A host without a port means Sentinel's default port, 26379.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from gateway.config.redis_endpoint import (
    bracketed,
    credentials_part,
    split_multi_host_url,
)

#: Sentinel's own port when a host gives none.
SENTINEL_PORT = 26379
SCHEMES = ("redis+sentinel", "rediss+sentinel")
_OPTIONS = ("sentinel_password", "client_name")


def is_sentinel_url(url: str | None) -> bool:
    """True when ``url`` is a ``redis+sentinel://`` (or ``rediss+sentinel://``) URL."""
    return bool(url) and url.split("://", 1)[0].lower() in SCHEMES  # type: ignore[union-attr]


@dataclass(frozen=True, slots=True, kw_only=True)
class SentinelTarget:
    """Where the gateway's store is, when Sentinel says which server is the primary.

    :param sentinels: ``(host, port)`` of each sentinel, in the order given (a bracketed IPv6 host keeps
        no brackets here).
    :param service: the name the sentinels monitor the primary under (``sentinel monitor <service> ...``).
    :param username: ACL user on the data nodes, or None.
    :param password: password on the data nodes, or None.
    :param sentinel_password: password on the sentinels, or None.
    :param db: the database number on the primary.
    :param ssl: TLS for every connection.
    :param client_name: ``CLIENT SETNAME`` on the data nodes' connections, or None.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    db: int = 0
    ssl: bool = False
    client_name: str | None = None

    def url(self) -> str:
        """The canonical ``redis+sentinel://`` URL (:func:`parse_sentinel_url` reads it back)."""
        credentials = credentials_part(self.username, self.password)
        hosts = ",".join(f"{bracketed(host)}:{port}" for host, port in self.sentinels)
        query = "&".join(f"{name}={quote(value, safe='')}" for name, value in
                         (("sentinel_password", self.sentinel_password), ("client_name", self.client_name))
                         if value is not None)
        scheme = SCHEMES[1] if self.ssl else SCHEMES[0]
        return f"{scheme}://{credentials}{hosts}/{quote(self.service, safe='')}/{self.db}" + (f"?{query}" if query else "")

    def where(self) -> str:
        """For logs and messages: service and sentinels, never a password."""
        hosts = ",".join(f"{bracketed(host)}:{port}" for host, port in self.sentinels)
        return f"service {self.service!r} via sentinels {hosts}"


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Read a ``redis+sentinel://`` URL.

    :raises ValueError: with what is wrong, when the URL cannot be understood.
    """
    parts = split_multi_host_url(url, schemes=SCHEMES, kind="Sentinel", what="sentinel", default_port=SENTINEL_PORT,
                                 known_options=_OPTIONS)
    if not parts.endpoints:
        raise ValueError("no sentinel host; write host:port[,host:port...] before the service name")
    service_text, _, db_text = parts.path.strip("/").partition("/")
    service = unquote(service_text)
    if not service:
        raise ValueError("no service name; write the name the sentinels monitor after the hosts (…/mymaster)")
    if db_text and not db_text.isdigit():
        raise ValueError(f"database {db_text!r} must be a whole number >= 0")
    return SentinelTarget(sentinels=parts.endpoints, service=service, username=parts.username, password=parts.password,
                          sentinel_password=parts.options.get("sentinel_password"), db=int(db_text or 0),
                          ssl=parts.tls, client_name=parts.options.get("client_name"))
