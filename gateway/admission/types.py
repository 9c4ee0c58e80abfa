"""The admission store's value objects: what its operations take and give back.

Pure data: no I/O. :mod:`gateway.admission.store` (the store) builds them from script replies; everything else
imports them from there.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.model import jsonutil
from ratelimit import UnitCall


@dataclass(frozen=True, slots=True, kw_only=True)
class Caps:
    """Concurrency caps for one decision.

    :param global_cap: most concurrent sessions overall (pending + active leases).
    :param campaign_caps: optional per-campaign caps; a campaign not listed has no own cap.
    """

    global_cap: int
    campaign_caps: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.global_cap, int) or self.global_cap < 0:
            raise ValueError(f"global_cap must be an int >= 0, got {self.global_cap!r}")
        for campaign, cap in self.campaign_caps.items():
            if not isinstance(campaign, str) or not isinstance(cap, int) or cap < 0:
                raise ValueError(f"campaign cap must map str to int >= 0, got {campaign!r}: {cap!r}")

    def campaign_caps_json(self) -> str:
        if not self.campaign_caps:
            return "{}"  # the common configuration: no campaign has its own cap
        return jsonutil.dumps(dict(self.campaign_caps))


class Outcome(StrEnum):
    ADMITTED = "admitted"
    QUEUED = "queued"
    FULL = "full"
    LIMITED = "limited"  # a rate limit refused: nothing stored, consumed or claimed


#: An admit reply's outcome field (bytes, or text from a decoding client) -> Outcome, without Enum.__call__.
_OUTCOMES: dict[bytes | str, Outcome] = {**{o.value.encode(): o for o in Outcome}, **{o.value: o for o in Outcome}}


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedEntry:
    """A queued entry claimed for dispatch, with its pending lease.

    :param data: exactly what was given to :meth:`AdmissionStore.admit` as ``data``.
    """

    request_id: str
    campaign: str
    lease_id: str
    data: dict


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmitResult:
    """The decision for one request.

    ``claimed`` holds older queued entries that this call claimed before deciding (fairness: a new
    request never overtakes an eligible older one). The caller must dispatch them whatever
    ``outcome`` is, ``FULL`` included.
    """

    outcome: Outcome
    lease_id: str | None = None
    position: int | None = None
    claimed: tuple[ClaimedEntry, ...] = ()
    #: The rate-limit report (``used, wait, refused`` per rule of the ``limits`` call), empty without one.
    limit_values: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitBinding:
    """Rate-limit work done by :meth:`AdmissionStore.activate` in the same call.

    :param call: the unit's concurrent sets and arguments (:meth:`ratelimit.RateLimiter.touch_call` with the
        session lease as the hold).
    :param key: where the binding ``conversation id -> unit`` is kept, for the session-ended webhook.
    :param value: the binding's text.
    :param ttl_seconds: the binding's lifetime.
    """

    call: UnitCall
    key: str
    value: str
    ttl_seconds: int


class Removed(StrEnum):
    """What :meth:`AdmissionStore.remove` dropped. Only ``NOTHING`` is false."""

    NOTHING = "nothing"
    WAITING = "waiting"          # the entry was in the queue
    DISPATCHING = "dispatching"  # a dispatcher holds it: its platform call is in flight

    def __bool__(self) -> bool:
        return self is not Removed.NOTHING


_REMOVED = {0: Removed.NOTHING, 1: Removed.WAITING, 2: Removed.DISPATCHING}


class Renewal(StrEnum):
    """What :meth:`AdmissionStore.extend_lease` found. Only ``RENEWED`` lets the dispatcher go on."""

    RENEWED = "renewed"  # the lease covers the next platform call
    LOST = "lost"        # the lease was reaped: the entry is back in the queue or held by someone else
    LEFT = "left"        # the client left meanwhile: the lease is released, nobody else gives back its unit


_RENEWALS = {1: Renewal.RENEWED, 0: Renewal.LOST, -1: Renewal.LEFT}


class EndResult(StrEnum):
    RELEASED = "released"
    ALREADY_ENDED = "already_ended"
    UNKNOWN = "unknown"


class RequestState(StrEnum):
    """Where a request is (the status endpoint's ``status`` is the public form of it)."""

    QUEUED = "queued"  # waiting, with a position
    DISPATCHING = "dispatching"  # a dispatcher is getting its session (to the client: still queued, first)
    READY = "ready"  # its session exists; the audio URL is kept for Queue.ReadyTtlSeconds
    FAILED = "failed"  # it ended without a session, and the reason is kept
    EXPIRED = "expired"  # its outcome is no longer kept

    @property
    def public(self) -> RequestState:
        """What a client is told: a request being dispatched is still waiting, at the front."""
        return RequestState.QUEUED if self is RequestState.DISPATCHING else self


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestStatus:
    """Where a request is: its state, its position while queued, its audio URL once ready, the reason
    once failed."""

    status: RequestState
    position: int | None = None
    web_socket_url: str | None = None
    message: str | None = None


class DuplicateRequestError(ValueError):
    """:meth:`AdmissionStore.admit` was given a request id the store already knows."""


class StoreReset(RedisError):
    """The store is not the one this process knew (its epoch changed: Redis restarted empty or was
    flushed); the call did nothing. The caller has the reset handled, then may try again."""
