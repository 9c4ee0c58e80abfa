"""``POST {hub}/negotiate``: creates a connection and answers with its id and transports."""

from __future__ import annotations

from signalr.tornado.base import HubRequestMixin, query_arguments, request_info

#: How soon a client refused by a stopping server may negotiate again (through a balancer, elsewhere).
STOPPING_RETRY_AFTER_SECONDS = 1
STOPPING_MESSAGE = "This server is shutting down; negotiate again to be connected to another one."


class NegotiateHandler(HubRequestMixin):
    """``POST {hub}/negotiate``; any other method is 405."""

    async def post(self) -> None:
        if self.server.stopping:
            # A connection made now would be closed in a moment (clients are being told to reconnect
            # elsewhere): a client retries, and a balancer sends its retry to an instance that stays.
            self.set_header("Retry-After", str(STOPPING_RETRY_AFTER_SECONDS))
            self._text(503, STOPPING_MESSAGE)
            return
        query = query_arguments(self)
        ok, _ = await self._user_or_401(request_info(self, query))
        if not ok:
            return
        body = self.server.negotiate(query)
        self.set_header("Content-Type", "application/json")
        self.finish(body)
