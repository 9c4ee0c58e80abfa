"""A Redis Cluster as real processes: three primaries with one replica each, made by ``redis-cli --cluster create``.

Each node is a :class:`tests.harness.redis_process.RedisProcess` started with ``--cluster-enabled yes`` (its
``nodes.conf`` in its own directory) and a short node timeout, so that a failover after a primary dies takes a
few seconds. Every wait polls the nodes for the condition (the cluster ok on every node, a new owner of a slot)
with a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time

import redis

from tests.harness.redis_process import Deployment, RedisProcess, free_port
from tests.harness.redis_process import wait_until as _wait

#: A primary silent this long is failing; a majority of primaries agreeing lets its replica take over.
NODE_TIMEOUT_MS = 1000


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0, socket_connect_timeout=1.0)


class ClusterDeployment(Deployment):
    """Six nodes, three primaries and a replica of each; :meth:`start` returns once every node says ok."""

    def __init__(self, primaries: int = 3, replicas: int = 1) -> None:
        args = ["--cluster-enabled", "yes", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # A replica cut off for long may still take over: the test kills primaries on purpose.
                "--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0"]
        self.replicas = replicas
        # The bus port is its own free port: the default (port + 10000) is past 65535 for many free ports.
        self.nodes = [RedisProcess(extra_args=[*args, "--cluster-port", str(free_port())])
                      for _ in range(primaries * (1 + replicas))]

    @property
    def url(self) -> str:
        """The gateway's ``RedisConnectionString``: two seed nodes are enough, it learns the others."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2])

    @property
    def stackexchange(self) -> str:
        """The same, in the StackExchange.Redis form."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2]) + ",cluster=true"

    def start(self, timeout: float = 30.0) -> None:
        binary = shutil.which("redis-cli")
        if binary is None:
            raise RuntimeError("redis-cli is not installed; run the README's test command, which installs it")
        for node in self.nodes:
            node.start()
        subprocess.run([binary, "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in self.nodes),
                        "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
        _wait(self._all_ok, "every node of the cluster reporting it ok", timeout)

    def _all_ok(self) -> bool:
        return all(self._ok(node.port) for node in self.nodes if node.pid is not None)

    def _ok(self, port: int) -> bool:
        with _client(port) as client:
            info = client.cluster("info")
            return info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == len(self.nodes)

    def owner_port(self, slot: int) -> int:
        """The port of the primary that owns ``slot``, as the first live node says."""
        for node in self.nodes:
            if node.pid is None:
                continue
            with _client(node.port) as client:
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return int(primary[1])
        raise RuntimeError(f"no live node names the owner of slot {slot}")

    def node(self, port: int) -> RedisProcess:
        return next(node for node in self.nodes if node.port == port)

    def wait_replicated(self, slot: int, timeout_ms: int = 5000) -> None:
        """Return once the replica of ``slot``'s primary has every write it made so far (``WAIT``; replication
        keeps order, so one acknowledged write of ours covers everything before it)."""
        with redis.Redis(host="127.0.0.1", port=self.owner_port(slot), socket_timeout=timeout_ms / 1000 + 1) as client:
            # A key of the same slot: the owner refuses others with MOVED.
            client.set(_key_in_slot(slot), secrets.token_hex(4))
            acknowledged = client.execute_command("WAIT", 1, timeout_ms)
        if acknowledged < 1:
            raise TimeoutError(f"the replica did not acknowledge within {timeout_ms} ms")

    def kill_owner(self, slot: int) -> int:
        """SIGKILL the primary that owns ``slot``; returns its port."""
        port = self.owner_port(slot)
        self.node(port).kill()
        return port

    def wait_for_new_owner(self, slot: int, old_port: int, timeout: float = 30.0) -> int:
        """Wait until a live node owns ``slot``, says it is a primary, and every live node says the cluster is
        ok; its port."""
        def promoted() -> bool:
            port = self.owner_port(slot)
            if port == old_port:
                return False
            with _client(port) as client:
                if client.info("replication").get("role") != "master":
                    return False
            return all(_client(node.port).cluster("info")["cluster_state"] == "ok"
                       for node in self.nodes if node.pid is not None)

        _wait(promoted, f"a failover of slot {slot} to a new primary", timeout)
        return self.owner_port(slot)

    def fail_over_gracefully(self, slot: int, timeout: float = 30.0) -> tuple[int, int]:
        """``CLUSTER FAILOVER`` on the replica of ``slot``'s primary, until it owns the slot; returns (old port,
        new port). Asked again while it has not happened: Redis drops a manual failover the replica could not
        finish within 5 s (it must first catch up with its primary, which a busy machine can delay) without a
        word to anyone, so one request is not always enough."""
        old = self.owner_port(slot)
        with _client(old) as primary:
            replica_port = int(primary.info("replication")["slave0"]["port"])
        deadline = time.monotonic() + timeout
        while True:
            with _client(replica_port) as replica:
                if replica.info("replication").get("role") != "master":
                    replica.execute_command("CLUSTER", "FAILOVER")
            try:
                return old, self.wait_for_new_owner(slot, old, timeout=min(8.0, max(0.5, deadline - time.monotonic())))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def _key_in_slot(slot: int) -> str:
    """A key that hashes to ``slot`` (found by trying: a few thousand tries at most)."""
    from redis.crc import key_slot

    for attempt in range(1_000_000):
        key = f"tests:barrier:{attempt}"
        if key_slot(key.encode()) == slot:
            return key
    raise RuntimeError(f"no key found for slot {slot}")
