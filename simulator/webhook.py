"""The simulated platform's "conversation ended" webhook: ``POST`` with ``X-Api-Token``, retried with backoff.

Each delivery runs as its own task and records its progress on the call (``webhook``: sending → delivered or
failed, and ``webhook_attempts``) so the control API can show it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import ujson
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from simulator.calls import SimCall

log = logging.getLogger("simulator.app")


class WebhookSender:
    """Delivers webhooks in the background; ``delivered`` and ``failed`` count finished deliveries."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: AsyncHTTPClient | None = None

    def start(self, call: SimCall, *, url: str, token: str, retry_delays: Sequence[float]) -> None:
        """Begin delivering ``call``'s webhook: one attempt more than ``retry_delays`` has pauses."""
        task = asyncio.get_running_loop().create_task(self._send(call, url, token, tuple(retry_delays)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, call: SimCall, url: str, token: str, retry_delays: tuple[float, ...]) -> None:
        if self._http is None:
            self._http = SimpleAsyncHTTPClient(force_instance=True)
        body = ujson.dumps({"ConversationSessionId": call.conversation_session_id})
        call.webhook = "sending"
        delays = (*retry_delays, None)
        for delay in delays:
            call.webhook_attempts += 1
            request = HTTPRequest(
                url,
                method="POST",
                body=body,
                headers={"Content-Type": "application/json", "X-Api-Token": token},
                # The platform's custom tools give up after 5 s.
                connect_timeout=5.0,
                request_timeout=5.0,
            )
            try:
                response = await self._http.fetch(request, raise_error=False)
                problem = None if 200 <= response.code < 300 else f"HTTP {response.code}"
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                call.webhook = "delivered"
                self.delivered += 1
                log.info(
                    "simulator webhook for %s delivered (attempt %d)",
                    call.conversation_session_id,
                    call.webhook_attempts,
                )
                return
            if delay is None:
                break
            log.warning(
                "simulator webhook for %s failed (%s), retrying in %.1f s", call.conversation_session_id, problem, delay
            )
            await asyncio.sleep(delay)
        call.webhook = "failed"
        self.failed += 1
        log.error(
            "simulator webhook for %s failed after %d attempts", call.conversation_session_id, call.webhook_attempts
        )

    async def drain(self) -> None:
        """Wait until every delivery started so far has succeeded or given up."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel deliveries still running and close the HTTP client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            self._http.close()
            self._http = None
