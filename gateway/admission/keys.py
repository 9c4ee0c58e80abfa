"""Every Redis key name the gateway's admission store uses, in one place.

All names live under one prefix (default ``iqra:``) so several deployments can share a Redis and an
operator can find everything with ``SCAN MATCH iqra:*``. The order of :meth:`AdmissionKeys.shared`
is a contract with ``gateway/lua/lib_store.lua``: it is ``KEYS[1..13]`` of every admission script.
Per-request keys (outcome, tombstone) are derived from ids the caller knows, so they are passed in
``KEYS`` too and no script builds a key name itself.

On a Redis Cluster the prefix is ``{iqra}:`` (:data:`CLUSTER_PREFIX`): the braces make ``iqra`` the hash tag of
every name, so all of them, presence, rate limits and the backplane's channels included, fall in one slot, and
every script (which touches several) stays on one node and atomic. Elsewhere it stays ``iqra:``: renaming the
keys of a running deployment would orphan its state on upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "iqra:"
#: The prefix on a Redis Cluster: the same names, with ``iqra`` as every name's hash tag.
CLUSTER_PREFIX = "{iqra}:"


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionKeys:
    """Key names of the admission store (slot leases and the queue).

    :param prefix: prepended to every key; must be non-empty so the store never owns bare names.
    """

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix:
            raise ValueError("key prefix must not be empty")

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}admission:{suffix}"

    @property
    def queue(self) -> str:
        """ZSET request id -> order score; rank + 1 is the queue position."""
        return self._name("queue")

    @property
    def seq(self) -> str:
        """Arrival counter giving queue scores."""
        return self._name("seq")

    @property
    def entries(self) -> str:
        """HASH request id -> entry data (JSON) of queued and dispatching entries."""
        return self._name("entries")

    @property
    def entry_campaign(self) -> str:
        """HASH request id -> campaign id."""
        return self._name("entry_campaign")

    @property
    def entry_lease(self) -> str:
        """HASH request id -> lease id of the dispatcher holding the entry."""
        return self._name("entry_lease")

    @property
    def pending(self) -> str:
        """ZSET pending lease id -> expiry time."""
        return self._name("leases:pending")

    @property
    def active(self) -> str:
        """ZSET conversation session id -> expiry time."""
        return self._name("leases:active")

    @property
    def lease_meta(self) -> str:
        """HASH lease id -> JSON {"c": campaign, "r": request id}."""
        return self._name("leases:meta")

    @property
    def reaped(self) -> str:
        """ZSET reaped lease id -> reap time (24 h memory for late activations)."""
        return self._name("leases:reaped")

    @property
    def active_meta(self) -> str:
        """HASH conversation session id -> campaign."""
        return self._name("leases:active_meta")

    @property
    def in_use(self) -> str:
        """HASH campaign -> leases (pending + active) it holds."""
        return self._name("in_use")

    @property
    def ended(self) -> str:
        """ZSET conversation session id -> time it ended (24 h)."""
        return self._name("ended")

    @property
    def early_ended(self) -> str:
        """ZSET conversation session id -> time an end arrived before any activation (24 h)."""
        return self._name("early_ended")

    def shared(self) -> list[str]:
        """``KEYS[1..13]`` of every admission script, in ``lib_store.lua`` order."""
        return [
            self.queue, self.seq, self.entries, self.entry_campaign, self.entry_lease,
            self.pending, self.active, self.lease_meta, self.reaped, self.active_meta,
            self.in_use, self.ended, self.early_ended,
        ]

    def outcome(self, request_id: str) -> str:
        """HASH of a request's "ready"/"failed" outcome (expires with its ttl)."""
        return self._name(f"outcome:{request_id}")

    def tombstone(self, request_id: str) -> str:
        """HASH marking a finished or removed request for 24 h, so it reads "expired"."""
        return self._name(f"tomb:{request_id}")

    @property
    def epoch(self) -> str:
        """STRING: the deployment's epoch token (:mod:`gateway.admission.epoch`); gone or changed after a store reset.
        Admission and claims carry the token they know and are refused when it no longer matches."""
        return f"{self.prefix}epoch"

    @property
    def control(self) -> str:
        """HASH of the operators' runtime controls (the admin API), read by admit.lua and claim.lua in the
        same atomic call that decides: ``paused`` = "1" while dispatching is paused, ``cap`` = the global cap
        that overrides the configured or learned one."""
        return self._name("control")

    def claim_fence(self, token: str) -> str:
        """STRING set when a dispatcher settles a claim token whose reply it lost (lives an hour), so the
        lost claim, should Redis run it later, claims nothing."""
        return self._name(f"claim_fence:{token}")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySpace:
    """Every Redis name the gateway owns, under one prefix, given out by the composition root.

    :param prefix: the deployment's prefix (``iqra:``); another lets two deployments share one Redis.
    """

    prefix: str = DEFAULT_PREFIX

    @classmethod
    def for_store(cls, *, cluster: bool, name: str = "iqra") -> KeySpace:
        """The names on a Redis Cluster (one hash tag for all) or on any other store.

        :param name: the deployment's ``Redis.KeyPrefix``: ``name:`` before every key, ``{name}:`` on a cluster.
        """
        return cls(prefix=f"{{{name}}}:" if cluster else f"{name}:")

    @property
    def hash_tag(self) -> str | None:
        """The hash tag every name carries (``iqra`` in ``{iqra}:``), or None when the prefix has none."""
        opening = self.prefix.find("{")
        closing = self.prefix.find("}", opening + 1)
        if opening < 0 or closing <= opening + 1:
            return None
        return self.prefix[opening + 1:closing]

    @property
    def admission(self) -> AdmissionKeys:
        """The admission store's keys (slots, queue, outcomes; the epoch)."""
        return AdmissionKeys(prefix=self.prefix)

    @property
    def presence(self) -> str:
        """The prefix the presence store puts before its ``presence:`` keys."""
        return self.prefix

    @property
    def rate_limits(self) -> str:
        """The prefix of every rate-limit key (``ratelimit``'s sets and the session bindings)."""
        return f"{self.prefix}rl:"

    @property
    def admin_audit(self) -> str:
        """LIST of the latest changes made through the admin API (who, what, when), newest first."""
        return f"{self.prefix}admin:audit"

    @property
    def backplane(self) -> str:
        """The prefix of the SignalR backplane's channels."""
        return f"{self.prefix}signalr"
