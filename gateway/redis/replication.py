"""Waiting for replicas on the writes that matter (``Redis.WaitForReplicas``).

Redis replicates asynchronously: a primary acknowledges a write before any replica has it, so a failover can
lose the last writes the gateway acted on (an admission it answered, a claim it called the platform for, a
session it recorded or ended). ``WAIT n timeout`` after such a write, on the same connection, returns once
``n`` replicas have every write of that connection, or when the timeout passes. The gateway acts on the write
only after the wait: when the primary dies during it, the caller sees a connection error (a 503, a claim
settled later, a store call retried on the new primary) instead of an answer the new primary does not know.
When the timeout passes first (a replica down or lagging) the gateway carries on, and says so once per
episode: the wait narrows the window, it does not stop the gateway serving while its replicas are unhealthy.
"""

from __future__ import annotations

import logging

log = logging.getLogger("gateway.redis.replication")


class ReplicaWait:
    """How many replicas must acknowledge, for how long to wait, and whether they lately did.

    :param replicas: replicas that must have the write (>= 1).
    :param timeout_ms: the longest wait, in milliseconds.
    """

    def __init__(self, replicas: int, timeout_ms: int) -> None:
        if replicas < 1 or timeout_ms < 1:
            raise ValueError("replicas and timeout_ms must be >= 1")
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        #: Waits that ended with fewer acknowledgements than asked for, since start.
        self.short = 0
        self._lagging = False

    def acknowledged(self, count: int) -> None:
        """Note what a ``WAIT`` answered; logs the start and the end of a time replicas fall short."""
        if count >= self.replicas:
            if self._lagging:
                self._lagging = False
                log.info("Redis replicas acknowledge writes again (%d of %d asked)", count, self.replicas)
            return
        self.short += 1
        if not self._lagging:
            self._lagging = True
            log.warning("only %d of %d Redis replica(s) acknowledged a write within %d ms; the gateway carries on, "
                        "but a failover now could lose the latest admissions and session records", count,
                        self.replicas, self.timeout_ms)
