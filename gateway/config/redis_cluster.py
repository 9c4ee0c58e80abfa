"""A Redis Cluster: the seed nodes to ask which node serves the deployment, and how to log in.

redis-py's cluster URL names one node; the gateway takes several (any of them may be down when it starts), so
it defines its own, the canonical form ``Settings.redis_url`` holds for a cluster (a StackExchange.Redis string
with ``cluster=true`` is turned into it)::

    redis+cluster://[[user]:password@]host1[:6379][,host2[:6379]...][/][?client_name=...]

``rediss+cluster://`` uses TLS. A cluster has only database 0, so the URL names none. The nodes are seeds only:
the gateway asks them which primary owns its keys' slot (:mod:`gateway.redis.cluster`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from gateway.config.redis_endpoint import (
    bracketed,
    credentials_part,
    split_multi_host_url,
)

#: A node's port when a seed gives none.
CLUSTER_PORT = 6379
SCHEMES = ("redis+cluster", "rediss+cluster")
_OPTIONS = ("client_name",)


def is_cluster_url(url: str | None) -> bool:
    """True when ``url`` is a ``redis+cluster://`` (or ``rediss+cluster://``) URL."""
    return bool(url) and url.split("://", 1)[0].lower() in SCHEMES  # type: ignore[union-attr]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterTarget:
    """Where the gateway's store is, when it is a Redis Cluster.

    :param nodes: ``(host, port)`` of each seed node, in the order given (an IPv6 host without brackets).
    :param username: ACL user on the nodes, or None.
    :param password: password on the nodes, or None.
    :param ssl: TLS for every connection.
    :param client_name: ``CLIENT SETNAME`` on the gateway's connections, or None.
    """

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    client_name: str | None = None

    def url(self) -> str:
        """The canonical ``redis+cluster://`` URL (:func:`parse_cluster_url` reads it back)."""
        hosts = ",".join(f"{bracketed(host)}:{port}" for host, port in self.nodes)
        query = f"?client_name={quote(self.client_name, safe='')}" if self.client_name is not None else ""
        scheme = SCHEMES[1] if self.ssl else SCHEMES[0]
        return f"{scheme}://{credentials_part(self.username, self.password)}{hosts}/{query}"

    def where(self) -> str:
        """For logs and messages: the seed nodes, never a password."""
        return "cluster via " + ",".join(f"{bracketed(host)}:{port}" for host, port in self.nodes)


def parse_cluster_url(url: str) -> ClusterTarget:
    """Read a ``redis+cluster://`` URL.

    :raises ValueError: with what is wrong, when the URL cannot be understood.
    """
    parts = split_multi_host_url(url, schemes=SCHEMES, kind="cluster", what="node", default_port=CLUSTER_PORT,
                                 known_options=_OPTIONS)
    if not parts.endpoints:
        raise ValueError("no node; write host:port[,host:port...] of one or more cluster nodes")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"a cluster has only database 0; remove {'/' + parts.path.strip('/')!r} from the URL")
    return ClusterTarget(nodes=parts.endpoints, username=parts.username, password=parts.password, ssl=parts.tls,
                         client_name=parts.options.get("client_name"))
