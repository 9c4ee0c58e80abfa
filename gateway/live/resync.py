"""Outcomes the backplane lost, sent again from the store.

A request's ``SessionReady`` or ``SessionFailed`` is published by the process that served (or failed) it,
and the backplane's pub/sub delivers a message at most once: a process whose subscription was down at
that moment (a Redis failover, a network cut, a Sentinel or Cluster switch) never hears it, and its
waiting visitor would wait in silence, though the store knows the outcome. So when the backplane is
subscribed again, each local request that is no longer in the queue has its status read, and a final one
is sent to its connections here, as ``Register`` does for an outcome that came before it.

Requests still in the queue are left to the position round (its next round tells them their places).
A client may hear an outcome twice, when the original arrived just before the subscription dropped:
the same case ``Register`` accepts, and harmless to the widget, which stops its connection at the first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping

from redis.exceptions import RedisError

from gateway.admission.types import RequestState, RequestStatus
from gateway.queue.answers import ServiceUnavailable

log = logging.getLogger("gateway.live")

#: Sends ``(connection id, method, payload)`` to one local connection.
Send = Callable[[str, str, dict[str, str | None]], None]


async def resend_missed_outcomes(local: Mapping[str, Collection[str]], *,
                                 queue_ids: Callable[[], Awaitable[list[str]]],
                                 status: Callable[[str], Awaitable[RequestStatus | None]],
                                 send: Send) -> int:
    """Send the outcome of every local request that left the queue and has one; returns how many were sent.

    :param local: request id -> the ids of this process's connections registered for it.
    :param queue_ids: the queue in order (one read for all).
    :param status: one request's status.
    :param send: sends an invocation to one local connection.
    """
    candidates = {request_id: tuple(connections) for request_id, connections in local.items()}
    if not candidates:
        return 0
    sent = 0
    try:
        waiting = set(await queue_ids())
        for request_id, connections in candidates.items():
            if request_id in waiting:
                continue
            found = await status(request_id)
            if found is None or found.status not in _OUTCOMES:
                continue
            method, payload = _OUTCOMES[found.status](found)
            for connection_id in connections:
                send(connection_id, method, payload)
            sent += 1
    except (RedisError, ServiceUnavailable) as exc:
        # The store went again: the next resubscription runs this once more.
        log.warning("could not check for outcomes missed by the backplane: %s", exc)
    if sent:
        log.info("sent %d outcome(s) again that the backplane may have missed", sent)
    return sent


#: The final states, and the invocation each sends.
_OUTCOMES: dict[RequestState, Callable[[RequestStatus], tuple[str, dict[str, str | None]]]] = {
    RequestState.READY: lambda found: ("SessionReady", {"webSocketUrl": found.web_socket_url}),
    RequestState.FAILED: lambda found: ("SessionFailed", {"message": found.message}),
}
