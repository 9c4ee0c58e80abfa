"""A Redis deployment under Sentinel, as real processes: a primary, a replica and three sentinels.

Built on :class:`tests.harness.redis_process.RedisProcess` for the data nodes; each sentinel is
``redis-server <config> --sentinel`` with a generated configuration that monitors the primary under
:data:`SERVICE` with a quorum of 2 and short timers, so that a failover after the primary dies takes a few
seconds. Every wait polls the processes for the condition (replication up, sentinels that know each other, a
new primary) with a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import redis

from tests.harness.redis_process import Deployment, RedisProcess, free_port
from tests.harness.redis_process import wait_until as _wait

SERVICE = "mymaster"
#: A primary silent this long is subjectively down; two sentinels agreeing make it objectively down.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class SentinelProcess:
    """One ``redis-server --sentinel`` on 127.0.0.1 watching ``primary_port`` as :data:`SERVICE`."""

    def __init__(self, primary_port: int) -> None:
        self.port = free_port()
        #: Set in advance so that the others can be told of this one (``known-sentinel``) at start.
        self.myid = secrets.token_hex(20)
        self.primary_port = primary_port
        self._dir = Path(tempfile.mkdtemp(prefix="iqra-sentinel-"))
        self._config = self._dir / "sentinel.conf"
        # Sentinel rewrites its configuration file as it learns the deployment: it must be its own, writable.
        self._proc: subprocess.Popen[bytes] | None = None

    def configure(self, replica_port: int, others: list[SentinelProcess]) -> None:
        """Write the configuration. The replica and the other sentinels are named in it, as Sentinel itself
        records them once learnt, so that they agree at once rather than after INFO (10 s) and hello (2 s)
        rounds; the discovery is Sentinel's to test, not ours."""
        known = "".join(f"sentinel known-sentinel {SERVICE} 127.0.0.1 {o.port} {o.myid}\n" for o in others)
        self._config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self._dir}\nloglevel warning\n"
            f"sentinel myid {self.myid}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
            f"sentinel known-replica {SERVICE} 127.0.0.1 {replica_port}\n" + known
        )

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run the README's test command, which installs it")
        self._proc = subprocess.Popen([binary, str(self._config), "--sentinel"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"redis-sentinel exited with code {self._proc.returncode}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")

        _wait(answers, f"sentinel on port {self.port} answering", timeout)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0)

    def master(self) -> dict:  # type: ignore[type-arg]
        """What this sentinel reports of :data:`SERVICE` (``SENTINEL MASTER``)."""
        with self.client() as client:
            return client.sentinel_master(SERVICE)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class SentinelDeployment(Deployment):
    """A primary, a replica of it and three sentinels; :meth:`start` returns once all of them agree."""

    def __init__(self) -> None:
        # A diskless sync starts at once (Redis waits 5 s by default, for more replicas to share it).
        quick_sync = ["--repl-diskless-sync-delay", "0"]
        self.primary = RedisProcess(extra_args=quick_sync)
        self.replica = RedisProcess(extra_args=[*quick_sync, "--replicaof", "127.0.0.1", str(self.primary.port)])
        self.sentinels = [SentinelProcess(self.primary.port) for _ in range(3)]

    @property
    def url(self) -> str:
        """The gateway's ``RedisConnectionString`` for this deployment."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    @property
    def stackexchange(self) -> str:
        """The same, in the StackExchange.Redis form."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f",serviceName={SERVICE}"

    def start(self, timeout: float = 20.0) -> None:
        self.primary.start()
        self.replica.start()
        _wait(lambda: self._replication_up(self.replica.port), "the replica's first sync", timeout)
        for sentinel in self.sentinels:
            sentinel.configure(self.replica.port, [o for o in self.sentinels if o is not sentinel])
            sentinel.start()
        # Sentinels find each other and the replica through the primary (hello messages every 2 s).
        _wait(self._sentinels_agree, "three sentinels knowing each other and the replica", timeout)

    def _sentinels_agree(self) -> bool:
        states = [s.master() for s in self.sentinels]
        return all(state["num-other-sentinels"] == 2 and state["num-slaves"] == 1 and state["is_master"]
                   and not state["is_sdown"] for state in states)

    @staticmethod
    def _replication_up(port: int) -> bool:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0) as client:
            return client.info("replication").get("master_link_status") == "up"

    def master_port(self) -> int | None:
        """The primary's port as the first sentinel that answers reports it."""
        for sentinel in self.sentinels:
            try:
                return int(sentinel.master()["port"])
            except (redis.RedisError, OSError):
                continue
        return None

    def wait_replicated(self, timeout_ms: int = 5000) -> None:
        """Return once the replica has every write the primary made so far.

        ``WAIT`` counts the writes of its own connection; replication keeps order, so one write of ours
        acknowledged means everything before it is on the replica too.
        """
        port = self.master_port()
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout_ms / 1000 + 1) as client:
            client.set("tests:replication-barrier", secrets.token_hex(4))
            acknowledged = client.execute_command("WAIT", 1, timeout_ms)
        if acknowledged < 1:
            raise TimeoutError(f"the replica did not acknowledge within {timeout_ms} ms")

    def kill_primary(self) -> int:
        """SIGKILL the current primary; returns its port."""
        port = self.master_port()
        node = self.primary if port == self.primary.port else self.replica
        node.kill()
        return node.port

    def wait_for_new_primary(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until every sentinel names another primary and that node says it is a primary; its port."""
        def promoted() -> bool:
            ports = {int(s.master()["port"]) for s in self.sentinels}
            if len(ports) != 1 or old_port in ports:
                return False
            with redis.Redis(host="127.0.0.1", port=ports.pop(), socket_timeout=1.0) as client:
                return client.info("replication").get("role") == "master"

        _wait(promoted, "a failover to a new primary", timeout)
        port = self.master_port()
        assert port is not None
        return port

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        self.replica.close()
        self.primary.close()
