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
import errno
import logging
import math
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import ujson
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.simple_httpclient import HTTPTimeoutError, SimpleAsyncHTTPClient

if TYPE_CHECKING:
    from gateway.model.request import SessionRequest
    from gateway.config.settings import CampaignSettings, PlatformSettings

log = logging.getLogger("gateway.platform.client")

#: The original never sets the fallback mode, so the platform always receives 0 (Performance).
AUDIO_ENCODING_FALLBACK_MODE = 0
#: Hard-coded by the original; the platform accepts 20-150 and uses it for OPUS framing.
FRAME_DURATION_MS = 30
#: Billing feature key of concurrent calls (PLAT ``BillingFeatureKey.cs``).
CALL_CONCURRENCY_KEY = "Call_Concurrency"
#: The platform's answers are small; anything bigger is not the platform.
MAX_RESPONSE_BYTES = 1024 * 1024
_AUDIO_PATH_MARKER = "/ws/session/"


@dataclass(frozen=True, slots=True, kw_only=True)
class InitiatedSession:
    """A session the platform created.

    :param conversation_session_id: the conversation id (24 hex); the session-ended webhook names it.
    :param web_session_id: the web session id, ``None`` if the platform did not send one.
    :param web_socket_url: the audio URL the browser must open within 5 minutes (it embeds a token).
    """

    conversation_session_id: str
    web_session_id: str | None
    web_socket_url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformConcurrency:
    """Live calls and the plan's limit, as the billing endpoints report them."""

    current: int
    limit: int


class FailureKind(StrEnum):
    """What a failed initiate means for trying again.

    The line that matters is whether the platform may have created a session: such a call is never
    repeated, so that no client ever gets two platform sessions.
    """

    #: The platform refused because too many calls are live: wait in line and try later.
    PLATFORM_FULL = "platform_full"
    #: Certainly no session was created (nothing was sent, or the platform answered 5xx) and a retry may
    #: succeed.
    RETRYABLE = "retryable"
    #: The request was sent and no usable answer came (a timeout, a connection closed, a 504 of a proxy,
    #: a success we cannot read): the platform may have created a session, so it is not repeated.
    AMBIGUOUS = "ambiguous"
    #: No retry can succeed: the platform refused this request (4xx, ``success: false``), or we cannot
    #: even send it.
    PERMANENT = "permanent"


#: Statuses that say "not now": the request was not processed and the same request may succeed later.
_TRY_LATER_STATUSES = frozenset({408, 429})
#: Connect errors: no connection was made, so nothing reached the platform.
_CONNECT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN,
                             errno.EHOSTDOWN, errno.EADDRNOTAVAIL})
#: Words of a timeout that fired before the request was written: while resolving, connecting or
#: shaking hands with TLS, or waiting in our own client's queue (Tornado's simple client; curl says
#: "Connection/Resolving timed out"). Tornado's "Timeout during request" has none of them.
_UNSENT_TIMEOUT_MARKERS = ("connect", "resolv", "request queue", "tls handshake")


class PlatformError(Exception):
    """The platform could not be reached, refused the request, or answered something unusable.

    :param message: human-readable text (the platform's own message when it sent one).
    :param code: the platform's code (e.g. ``InitiateWebSession:REGION_NOT_FOUND``) or one of ours:
        :attr:`TIMEOUT`, :attr:`UNREACHABLE`, :attr:`HTTP_STATUS`, :attr:`INVALID_RESPONSE`,
        :attr:`UNSENDABLE`.
    :param status: the HTTP status of the answer, ``None`` when there was no answer.
    :param sent: ``False`` when the request certainly never reached the platform (no connection was
        made, or it timed out in our own client's queue); ``True`` when it may have.
    """

    TIMEOUT = "TIMEOUT"
    UNREACHABLE = "UNREACHABLE"
    HTTP_STATUS = "HTTP_STATUS"
    INVALID_RESPONSE = "INVALID_RESPONSE"
    #: Our own failure to build the request (text with no UTF-8 form): nothing was sent.
    UNSENDABLE = "UNSENDABLE"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 sent: bool = True) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.sent = sent
        # Same text as the original's exception ("[code] message"), which operators grep for.
        super().__init__(f"[{code}] {message}" if code else message)

    @property
    def is_concurrency_limit(self) -> bool:
        """Whether the platform refused because too many calls are live (the original's text test)."""
        text = f"{self.code or ''} {self.message}".lower()
        return "concurrency" in text or "too many" in text

    @property
    def may_have_created(self) -> bool:
        """Whether the platform may have created a session despite the failure (never retry then)."""
        if not self.sent:
            return False
        if self.status is None or self.status == 504:
            return True  # sent and no answer, or a proxy that stopped waiting for the platform's
        return 200 <= self.status < 300 and self.code == self.INVALID_RESPONSE

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later and certainly made no session this time."""
        if self.code == self.UNSENDABLE or self.is_concurrency_limit:
            return False
        if not self.sent:
            return True
        return self.status is not None and (
            (500 <= self.status < 600 and self.status != 504) or self.status in _TRY_LATER_STATUSES)

    @property
    def kind(self) -> FailureKind:
        """What the failure means for trying again (see :class:`FailureKind`)."""
        if self.is_concurrency_limit:
            return FailureKind.PLATFORM_FULL
        if self.retryable:
            return FailureKind.RETRYABLE
        if self.may_have_created:
            return FailureKind.AMBIGUOUS
        return FailureKind.PERMANENT


def _never_connected(exc: OSError) -> bool:
    """True for an error raised while connecting (refused, no route, DNS), before anything was sent."""
    return isinstance(exc, socket.gaierror) or exc.errno in _CONNECT_ERRNOS


def platform_client_identifier(client_identifier: str | None, ip: str) -> str:
    """The ``ClientIdentifier`` the platform receives: ``"{cid}_{ip}"``, or the IP alone.

    The original appends the caller's IP so two visitors sending the same identifier stay distinct; it
    uses ``Unknown`` when the IP is not known.
    """
    address = ip or "Unknown"
    if client_identifier:
        return f"{client_identifier}_{address}"
    return address


def initiate_body(campaign: CampaignSettings, request: SessionRequest, client_ip: str) -> dict[str, Any]:
    """The initiate request body, PascalCase as .NET's default serializer writes it."""
    audio = request.audio
    return {
        "TransportType": int(request.transport_type),
        "WebCampaignId": campaign.web_campaign_id,
        "RegionId": request.region_id,
        "ClientIdentifier": platform_client_identifier(request.client_identifier, client_ip),
        "AudioInputConfiguration": {
            "SampleRate": audio.input_sample_rate,
            "BitsPerSample": audio.input_bits_per_sample,
            "AudioEncodingType": int(audio.input_encoding_type),
            "AudioEncodingFallbackMode": AUDIO_ENCODING_FALLBACK_MODE,
        },
        "AudioOutputConfiguration": {
            "SampleRate": audio.output_sample_rate,
            "BitsPerSample": audio.output_bits_per_sample,
            "AudioEncodingType": int(audio.output_encoding_type),
            "AudioEncodingFallbackMode": AUDIO_ENCODING_FALLBACK_MODE,
            "FrameDurationMs": FRAME_DURATION_MS,
        },
        "DynamicVariables": dict(request.dynamic_variables),
        "Metadata": dict(request.metadata),
    }


def conversation_id_from_url(url: str) -> str | None:
    """The path segment after ``/ws/session/`` of an audio URL, or ``None``."""
    path = urlsplit(url).path
    _, marker, rest = path.partition(_AUDIO_PATH_MARKER)
    if not marker:
        return None
    segment = unquote(rest.split("/", 1)[0])
    return segment or None


def _field(data: Mapping[str, Any], name: str) -> Any:
    """Case-insensitive lookup: the platform writes camelCase, but a proxy or another version may not."""
    if name in data:
        return data[name]
    lowered = name.lower()
    for key, value in data.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


def parse_initiate_data(data: Any, *, status: int | None = None) -> InitiatedSession:
    """Turn the envelope's ``data`` of a successful initiate into an :class:`InitiatedSession`.

    :param status: the HTTP status, carried into errors.
    :raises PlatformError: (``INVALID_RESPONSE``) when the URL or the conversation id is missing.
    """
    invalid = PlatformError.INVALID_RESPONSE
    if not isinstance(data, Mapping):
        raise PlatformError("The platform reported success but sent no session data.", code=invalid, status=status)
    url = _field(data, "sessionWebSocketURL")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("ws", "wss"):
        raise PlatformError(
            "The platform's answer has no valid sessionWebSocketURL (a ws:// or wss:// URL).",
            code=invalid,
            status=status,
        )
    conversation_id = _field(data, "conversationSessionId")
    if not isinstance(conversation_id, str) or not conversation_id:
        conversation_id = conversation_id_from_url(url)
    if not conversation_id:
        raise PlatformError(
            "The platform's answer has no conversationSessionId and the audio URL does not contain one.",
            code=invalid,
            status=status,
        )
    web_session_id = _field(data, "webSessionId")
    if not isinstance(web_session_id, str) or not web_session_id:
        web_session_id = _field(data, "sessionId")
    return InitiatedSession(
        conversation_session_id=conversation_id,
        web_session_id=web_session_id if isinstance(web_session_id, str) and web_session_id else None,
        web_socket_url=url,
    )


def _quantity(value: Any, what: str) -> int:
    # Billing quantities are .NET decimals; a missing key reads as 0, as in the original.
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PlatformError(f"The platform sent a non-numeric {what}: {value!r}.", code=PlatformError.INVALID_RESPONSE)
    return int(value)


def parse_concurrency(usage_data: Any, limit_data: Any) -> PlatformConcurrency:
    """Read ``Call_Concurrency`` from the two billing answers' ``data``."""
    if not isinstance(usage_data, Mapping) or not isinstance(limit_data, Mapping):
        raise PlatformError("The platform's billing answer has no data object.", code=PlatformError.INVALID_RESPONSE)
    current_usage = _field(usage_data, "currentUsage")
    if current_usage is None:
        current_usage = {}
    if not isinstance(current_usage, Mapping):
        raise PlatformError(
            "The platform's billing usage has no currentUsage object.", code=PlatformError.INVALID_RESPONSE
        )
    return PlatformConcurrency(
        current=_quantity(_field(current_usage, CALL_CONCURRENCY_KEY), "current call concurrency"),
        limit=_quantity(_field(limit_data, CALL_CONCURRENCY_KEY), "call concurrency limit"),
    )


def parse_envelope(response: HTTPResponse, what: str) -> Any:
    """Check status and envelope of a platform answer and return its ``data``.

    :raises PlatformError: for a non-2xx status, a body that is not the JSON envelope, or ``success: false``.
    """
    body = response.body or b""
    try:
        envelope = ujson.loads(body) if body else None
    except ValueError:
        envelope = None
    if not 200 <= response.code < 300:
        # The platform's own code/message, when the error page happens to be its envelope, is more useful.
        code = _field(envelope, "code") if isinstance(envelope, Mapping) else None
        message = _field(envelope, "message") if isinstance(envelope, Mapping) else None
        raise PlatformError(
            str(message) if message else f"{what}: Api call failed with status code {response.code}.",
            code=str(code) if code else PlatformError.HTTP_STATUS,
            status=response.code,
        )
    if not isinstance(envelope, Mapping):
        raise PlatformError(
            f"{what}: the platform's answer is not a JSON object.",
            code=PlatformError.INVALID_RESPONSE,
            status=response.code,
        )
    success = _field(envelope, "success")
    if success is not True:
        code = _field(envelope, "code")
        message = _field(envelope, "message")
        if success is not False:
            raise PlatformError(
                f"{what}: the platform's answer has no boolean 'success'.",
                code=PlatformError.INVALID_RESPONSE,
                status=response.code,
            )
        raise PlatformError(
            str(message) if message else f"{what}: the platform refused the request.",
            code=str(code) if code else None,
            status=response.code,
        )
    return _field(envelope, "data")


class PlatformClient:
    """Calls the Iqra platform.

    :param settings: base URL, API token, timeouts.
    :param http_client: a Tornado client to use (not closed by :meth:`close`); by default the client
        creates its own simple client on first use, so no shared per-loop instance gets closed.
    """

    def __init__(self, settings: PlatformSettings, *, http_client: AsyncHTTPClient | None = None) -> None:
        self._settings = settings
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
                sent = not any(marker in text for marker in _UNSENT_TIMEOUT_MARKERS)
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
                sent=not _never_connected(exc),
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
        try:
            body = self._initiate_payload(campaign, request, client_ip, what)
            response = await self._fetch(self._request("POST", path, body), what)
            session = parse_initiate_data(parse_envelope(response, what), status=response.code)
        except PlatformError as exc:
            log.warning("platform initiate failed for campaign %s: %s", campaign.name, exc)
            raise
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
        results = await asyncio.gather(
            self._get_data("user/billing/usage", "Billing usage"),
            self._get_data("user/billing/featuresactivequantity", "Billing features"),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("platform concurrency query failed: %s", result)
                raise result
        return parse_concurrency(results[0], results[1])

    async def _get_data(self, path: str, what: str) -> Any:
        response = await self._fetch(self._request("GET", path), what)
        return parse_envelope(response, what)

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http and self._http is not None:
            self._http.close()
            self._http = None
