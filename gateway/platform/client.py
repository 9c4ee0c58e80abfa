"""Client for the Iqra platform's public API: web-session initiation and billing concurrency.

It sends exactly the request the original middleware sends (``Services/VoiceAiPlatformService.cs``):

* ``POST {base}business/{BusinessId}/websession/initiate`` with ``Authorization: Token <key>`` and a
  PascalCase JSON body (enums as integers, ``AudioEncodingFallbackMode`` 0, ``FrameDurationMs`` 30 on the
  output configuration);
* ``GET {base}user/billing/usage`` and ``GET {base}user/billing/featuresactivequantity`` in parallel for
  the ``Call_Concurrency`` usage and limit.

The platform answers HTTP 200 with the envelope ``{success, message, code, data}``. Two ``data`` shapes of
the initiate answer exist: the newer one (``webSessionId``, ``conversationSessionId``,
``sessionWebSocketURL``) that production iqra.bot serves and the original expects, and the public
open-source one (``sessionId``, ``sessionWebSocketURL``). Both are accepted; when the conversation id is
missing it is read from the audio URL (``/ws/session/{conversationSessionId}/...``).

Every failure surfaces as one exception type, :class:`PlatformError`, so the HTTP edge and the queue
processor have a single thing to catch; its :attr:`PlatformError.kind` says what a retry would do (see
:class:`FailureKind`). The API token is a credential and is never logged; neither is the
audio URL, whose last path segment is the call's access token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import ujson
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.simple_httpclient import HTTPTimeoutError, SimpleAsyncHTTPClient

from gateway.platform.errors import UNSENT_TIMEOUT_MARKERS, PlatformError, never_connected
from gateway.platform.wire import (
    MAX_RESPONSE_BYTES,
    InitiatedSession,
    PlatformConcurrency,
    initiate_body,
    parse_concurrency,
    parse_envelope,
    parse_initiate_data,
)

if TYPE_CHECKING:
    from gateway.config.settings import CampaignSettings, PlatformSettings
    from gateway.model.request import SessionRequest

log = logging.getLogger("gateway.platform.client")

#: Told of every call: ``(operation, result, seconds)``, where the operation is ``"initiate"`` or
#: ``"concurrency"`` and the result ``"success"`` or the failure's :class:`FailureKind` (for the metrics).
CallObserver = Callable[[str, str, float], None]


class PlatformClient:
    """Calls the Iqra platform.

    :param settings: base URL, API token, timeouts.
    :param http_client: a Tornado client to use (not closed by :meth:`close`); by default the client
        creates its own simple client on first use, so no shared per-loop instance gets closed.
    :param observer: told of every call, its result and how long it took (:data:`CallObserver`).
    """

    def __init__(self, settings: PlatformSettings, *, http_client: AsyncHTTPClient | None = None,
                 observer: CallObserver | None = None) -> None:
        self._settings = settings
        self._observer = observer
        self._http = http_client
        self._owns_http = http_client is None
        self._base_url = settings.base_url if settings.base_url.endswith("/") else settings.base_url + "/"

    def _client(self) -> AsyncHTTPClient:
        if self._http is None:
            # force_instance: the per-IOLoop shared client may belong to someone else, and close() must
            # not close it for them.
            self._http = SimpleAsyncHTTPClient(force_instance=True, max_clients=64, max_body_size=MAX_RESPONSE_BYTES)
        return self._http

    def _request(self, method: str, path: str, body: bytes | None = None) -> HTTPRequest:
        headers = {"Authorization": f"Token {self._settings.api_secret_token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return HTTPRequest(
            self._base_url + path,
            method=method,
            headers=headers,
            body=body,
            connect_timeout=self._settings.connect_timeout_seconds,
            request_timeout=self._settings.request_timeout_seconds,
            # A redirect would turn the POST into a GET; treat it as the error it is.
            follow_redirects=False,
        )

    async def _fetch(self, request: HTTPRequest, what: str) -> HTTPResponse:
        try:
            return await self._client().fetch(request, raise_error=False)
        except HTTPClientError as exc:
            # An injected curl client reports timeouts as a plain 599 whose text says so.
            text = str(exc).lower()
            if isinstance(exc, HTTPTimeoutError) or "timeout" in text or "timed out" in text:
                sent = not any(marker in text for marker in UNSENT_TIMEOUT_MARKERS)
                raise PlatformError(self._timeout_message(what, text), code=PlatformError.TIMEOUT,
                                    sent=sent) from None
            # Otherwise the connection closed before an answer, or the answer was too big: after sending.
            raise PlatformError(
                f"{what}: the Iqra platform closed the connection ({exc}).", code=PlatformError.UNREACHABLE
            ) from None
        except OSError as exc:
            # Refused or unroutable: nothing was sent. A reset or a broken pipe may come after the
            # request went out, so only the connect errors count as unsent.
            raise PlatformError(
                f"{what}: cannot reach the Iqra platform ({exc.strerror or exc}).", code=PlatformError.UNREACHABLE,
                sent=not never_connected(exc),
            ) from None

    def _timeout_message(self, what: str, error_text: str) -> str:
        if "connect" in error_text:
            return (
                f"{what}: could not connect to the Iqra platform within "
                f"{self._settings.connect_timeout_seconds:g} s (VoiceAiPlatform.ConnectTimeoutSeconds)."
            )
        return (
            f"{what}: the Iqra platform did not answer within "
            f"{self._settings.request_timeout_seconds:g} s (VoiceAiPlatform.RequestTimeoutSeconds)."
        )

    async def initiate(self, campaign: CampaignSettings, request: SessionRequest, client_ip: str) -> InitiatedSession:
        """Create a web session for ``request`` on ``campaign``'s business.

        :param campaign: the campaign settings (business id and web campaign id).
        :param request: the validated widget request.
        :param client_ip: the caller's IP, appended to the client identifier.
        :raises PlatformError: on any failure; :attr:`PlatformError.kind` tells a full platform, a failure
            worth retrying and one that may have created a session apart.
        """
        path = f"business/{quote(str(campaign.business_id), safe='')}/websession/initiate"
        what = f"Initiate web session (campaign {campaign.name})"
        started = time.monotonic()
        try:
            body = self._initiate_payload(campaign, request, client_ip, what)
            response = await self._fetch(self._request("POST", path, body), what)
            session = parse_initiate_data(parse_envelope(response, what), status=response.code)
        except PlatformError as exc:
            self._observe("initiate", exc.kind.value, started)
            log.warning("platform initiate failed for campaign %s: %s", campaign.name, exc)
            raise
        self._observe("initiate", "success", started)
        log.info(
            "platform initiated conversation %s (web session %s) for campaign %s",
            session.conversation_session_id,
            session.web_session_id,
            campaign.name,
        )
        return session

    @staticmethod
    def _initiate_payload(campaign: CampaignSettings, request: SessionRequest, client_ip: str, what: str) -> bytes:
        try:
            body = ujson.dumps(
                initiate_body(campaign, request, client_ip), ensure_ascii=False, escape_forward_slashes=False
            )
            return body.encode("utf-8")
        except (UnicodeError, ValueError, TypeError, OverflowError) as exc:
            # Our own failure (a lone surrogate has no UTF-8 form): the same request can never be sent.
            reason = exc.reason if isinstance(exc, UnicodeError) and hasattr(exc, "reason") else type(exc).__name__
            raise PlatformError(f"{what}: the request cannot be sent as UTF-8 JSON ({reason}).",
                                code=PlatformError.UNSENDABLE, sent=False) from None

    async def concurrency(self) -> PlatformConcurrency:
        """Live calls and the plan's limit from the two billing endpoints, queried in parallel.

        :raises PlatformError: when either request fails.
        """
        started = time.monotonic()
        results = await asyncio.gather(
            self._get_data("user/billing/usage", "Billing usage"),
            self._get_data("user/billing/featuresactivequantity", "Billing features"),
            return_exceptions=True,
        )
        try:
            for result in results:
                if isinstance(result, BaseException):
                    log.warning("platform concurrency query failed: %s", result)
                    raise result
            reading = parse_concurrency(results[0], results[1])
        except PlatformError as exc:
            self._observe("concurrency", exc.kind.value, started)
            raise
        self._observe("concurrency", "success", started)
        return reading

    def _observe(self, operation: str, result: str, started: float) -> None:
        if self._observer is not None:
            self._observer(operation, result, time.monotonic() - started)

    async def _get_data(self, path: str, what: str) -> Any:
        response = await self._fetch(self._request("GET", path), what)
        return parse_envelope(response, what)

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http and self._http is not None:
            self._http.close()
            self._http = None
