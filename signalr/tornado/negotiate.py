"""``POST {hub}/negotiate``: creates a connection and answers with its id and transports."""

from __future__ import annotations

from signalr.tornado.base import HubRequestMixin, query_arguments, request_info


class NegotiateHandler(HubRequestMixin):
    """``POST {hub}/negotiate``; any other method is 405."""

    async def post(self) -> None:
        query = query_arguments(self)
        ok, _ = await self._user_or_401(request_info(self, query))
        if not ok:
            return
        body = self.server.negotiate(query)
        self.set_header("Content-Type", "application/json")
        self.finish(body)
