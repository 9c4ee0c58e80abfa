"""How many sessions run at once and how the rest wait: the ``Concurrency`` and ``Queue`` sections."""

from __future__ import annotations

from gateway.config.binder import Binder
from gateway.config.problems import Section
from gateway.config.source import Node
from gateway.config.settings import ConcurrencySettings, QueueSettings

#: The platform's audio WebSocket token is valid this long after initiate.
_PLATFORM_TOKEN_SECONDS = 300


def bind_concurrency(binder: Binder, section: Section | None) -> ConcurrencySettings | None:
    defaults = ConcurrencySettings()
    s = section or Section(Node(), "Concurrency")
    cap = binder.integer(s.child_path("MaxConcurrentSessions"), s.take("MaxConcurrentSessions"), minimum=0)
    sync_value = s.take("SyncFromPlatform")
    sync = binder.boolean(s.child_path("SyncFromPlatform"), sync_value)
    session_lease = binder.integer(s.child_path("SessionLeaseSeconds"), s.take("SessionLeaseSeconds"), minimum=1)
    pending_lease = binder.integer(s.child_path("PendingLeaseSeconds"), s.take("PendingLeaseSeconds"), minimum=1)
    interval = binder.seconds(s.child_path("SyncIntervalSeconds"), s.take("SyncIntervalSeconds"))
    attempts = binder.integer(s.child_path("MaxDispatchAttempts"), s.take("MaxDispatchAttempts"),
                              minimum=1, maximum=10)
    binder.warn_unknown(s)
    failed = len(binder.problems)
    cap_given = s.has("MaxConcurrentSessions")
    if sync is None and sync_value is None:
        # An existing deployment's file has no cap: as the original, learn it from the platform.
        sync = not cap_given
    if sync is False and not cap_given:
        binder.problem(
            "Concurrency",
            "no session cap: set Concurrency.MaxConcurrentSessions to the number of sessions the gateway may "
            "hold at once, or set Concurrency.SyncFromPlatform to true to read the cap from the platform's "
            "billing endpoints",
        )
    if cap == 0:
        binder.warn(s.child_path("MaxConcurrentSessions"), "is 0: every request will be queued")
    session_lease = defaults.session_lease_seconds if session_lease is None else session_lease
    pending_lease = defaults.pending_lease_seconds if pending_lease is None else pending_lease
    if pending_lease >= session_lease:
        binder.problem(
            s.child_path("PendingLeaseSeconds"),
            f"({pending_lease}) must be shorter than Concurrency.SessionLeaseSeconds ({session_lease}); "
            "lower it or raise SessionLeaseSeconds",
        )
    if pending_lease <= binder.request_timeout:
        binder.problem(
            s.child_path("PendingLeaseSeconds"),
            f"({pending_lease}) must be longer than VoiceAiPlatform.RequestTimeoutSeconds "
            f"({binder.request_timeout:g}), or a slow platform call could outlive its reservation; "
            "raise it or lower RequestTimeoutSeconds",
        )
    if len(binder.problems) > failed or sync is None:
        return None
    return ConcurrencySettings(
        max_concurrent_sessions=cap,
        session_lease_seconds=session_lease,
        pending_lease_seconds=pending_lease,
        sync_from_platform=sync,
        sync_interval_seconds=defaults.sync_interval_seconds if interval is None else interval,
        max_dispatch_attempts=defaults.max_dispatch_attempts if attempts is None else attempts,
    )


def bind_queue(binder: Binder, section: Section | None) -> QueueSettings:
    defaults = QueueSettings()
    if section is None:
        return defaults

    def read(name: str, default: int, minimum: int) -> int:
        value = binder.integer(section.child_path(name), section.take(name), minimum=minimum)
        return default if value is None else value

    result = QueueSettings(
        max_length=read("MaxLength", defaults.max_length, 1),
        ready_ttl_seconds=read("ReadyTtlSeconds", defaults.ready_ttl_seconds, 1),
        register_timeout_seconds=read("RegisterTimeoutSeconds", defaults.register_timeout_seconds, 1),
        disconnect_grace_seconds=read("DisconnectGraceSeconds", defaults.disconnect_grace_seconds, 0),
    )
    if result.ready_ttl_seconds > _PLATFORM_TOKEN_SECONDS:
        binder.warn(
            section.child_path("ReadyTtlSeconds"),
            f"is {result.ready_ttl_seconds} s, but the platform's audio WebSocket token expires "
            f"{_PLATFORM_TOKEN_SECONDS} s after initiate; a URL kept longer will be refused",
        )
    binder.warn_unknown(section)
    return result
