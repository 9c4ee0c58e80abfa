"""Why a queued request left the queue without a session, and what its client is told.

Every way out of the queue other than a session ends with a ``SessionFailed`` to the request's open hub
connections and the same message from the status endpoint: a person whose place is gone must hear why,
and that trying again is the way on. The texts say what the client can do; the reason codes name the
cause in logs (``QueueChanged.reason``).
"""

from __future__ import annotations

from enum import StrEnum


class Departure(StrEnum):
    """How a waiting request left the queue without a session."""

    #: The client (this or another of its windows, over the hub or HTTP) gave its place up.
    LEFT = "left"
    #: No hub connection registered it within ``Queue.RegisterTimeoutSeconds``.
    UNREGISTERED = "abandoned (unregistered)"
    #: Its hub connections were all gone for ``Queue.DisconnectGraceSeconds``.
    DISCONNECTED = "abandoned (disconnected)"
    #: Its admission failed after it was queued (the store's answer was lost): the client was told so.
    WITHDRAWN = "withdrawn"
    #: The store (Redis) was reset: the entry no longer exists.
    STORE_RESET = "store reset"
    #: An operator removed it (the admin API).
    REMOVED = "removed by an operator"


def departure_message(departure: Departure, *, register_timeout: float, disconnect_grace: float) -> str:
    """The sentence a client whose request left the queue for ``departure`` is shown."""
    if departure is Departure.LEFT:
        return "You left the waiting queue. To talk to the agent, please start a new session."
    if departure is Departure.UNREGISTERED:
        return (f"Your place in the queue was released because the page did not connect to the live queue "
                f"within {register_timeout:g} seconds. Please try again.")
    if departure is Departure.DISCONNECTED:
        return (f"Your place in the queue was released because the connection to the live queue was lost "
                f"for more than {disconnect_grace:g} seconds. Please try again.")
    if departure is Departure.REMOVED:
        return ("Your request was removed from the waiting queue by the service's operators. "
                "Please try again later.")
    if departure is Departure.WITHDRAWN:
        return ("Your request could not be completed because the gateway briefly lost contact with its "
                "session store. Please try again.")
    return ("Your place in the queue was lost because the gateway's session store was restarted. "
            "Please try again.")
