"""The platform's wire format, without I/O: the initiate request body the original middleware sends
(``Services/VoiceAiPlatformService.cs``), and the reading of the platform's answers (the envelope
``{success, message, code, data}``, both shapes of a created session, the billing quantities)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import ujson

from gateway.platform.errors import PlatformError

if TYPE_CHECKING:
    from tornado.httpclient import HTTPResponse

    from gateway.config.settings import CampaignSettings
    from gateway.model.request import SessionRequest

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
    def invalid(message: str) -> PlatformError:
        return PlatformError(message, code=PlatformError.INVALID_RESPONSE, status=status)

    if not isinstance(data, Mapping):
        raise invalid("The platform reported success but sent no session data.")
    url = _field(data, "sessionWebSocketURL")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("ws", "wss"):
        raise invalid("The platform's answer has no valid sessionWebSocketURL (a ws:// or wss:// URL).")
    conversation_id = _field(data, "conversationSessionId")
    if not isinstance(conversation_id, str) or not conversation_id:
        conversation_id = conversation_id_from_url(url)
    if not conversation_id:
        raise invalid("The platform's answer has no conversationSessionId and the audio URL does not contain one.")
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
