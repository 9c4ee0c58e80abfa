"""The session request a browser sends to ``POST /api/session/request``, and its validation.

Field names match case-insensitively, as ASP.NET's binder does; unknown top-level fields are ignored, as
there. The campaign and region checks come first with the original's exact messages; every other check
names the field (camelCase path) and says what is allowed, so a widget integrator can fix the request
from the message alone. Audio rules are the platform's, in the strict form the official widget enforces.

Decisions (documented for integrators):

* OPUS sample rates are the five the codec defines (8000, 12000, 16000, 24000, 48000 Hz), not any rate
  in 8–48 kHz: a rate in between cannot be encoded, so it is refused here rather than by the platform.
* G.722 takes 16000 Hz with 14 bits per sample, as both the platform's rule and the widget say.
* ``clientIdentifier`` is limited to 210 characters: the gateway sends ``"{clientIdentifier}_{ip}"`` and an
  IP address takes up to 45 characters, which keeps the platform's 256-character limit. An empty string
  counts as absent, as in the original (the platform then receives the IP alone).
"""

from __future__ import annotations

import codecs
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from gateway.model.enums import DISABLED_ENCODINGS, WEBRTC_ENCODINGS, AudioEncodingType, TransportType
from gateway.model.errors import PayloadError
from gateway.model.text import is_sendable, unsendable_message

if TYPE_CHECKING:
    from gateway.config.settings import CampaignSettings

__all__ = [
    "MAX_BODY_BYTES",
    "AudioConfiguration",
    "PayloadError",
    "SessionRequest",
    "parse_session_request",
]

MAX_BODY_BYTES = 64 * 1024

CAMPAIGN_MESSAGE = "Invalid or missing CampaignId."
REGION_MESSAGE = "Invalid or missing RegionId, or RegionId not allowed for this campaign."

#: The platform's limit on the identifier it receives.
PLATFORM_CLIENT_IDENTIFIER_MAX = 256
#: The longest textual IP address (an IPv4-mapped IPv6 address), appended as ``_ip`` by the gateway.
_LONGEST_IP = 45
CLIENT_IDENTIFIER_MAX = PLATFORM_CLIENT_IDENTIFIER_MAX - 1 - _LONGEST_IP
MAX_VARIABLES = 64
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 4096
OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)

_AUDIO = "audioConfiguration"
_AUDIO_FIELDS = (
    "inputEncodingType",
    "inputSampleRate",
    "inputBitsPerSample",
    "outputEncodingType",
    "outputSampleRate",
    "outputBitsPerSample",
)
_AUDIO_KEYS = tuple((name, name.lower()) for name in _AUDIO_FIELDS)
_ENCODING_LIST = ", ".join(f"{e.value} ({e.name})" for e in AudioEncodingType if e not in DISABLED_ENCODINGS)
# Enum lookups by value without going through EnumMeta.__call__ (several per request otherwise).
_TRANSPORTS = TransportType._value2member_map_
_ENCODINGS = AudioEncodingType._value2member_map_


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioConfiguration:
    """Codec, rate and sample size of each direction; encodings are :class:`AudioEncodingType` values."""

    input_encoding_type: int
    input_sample_rate: int
    input_bits_per_sample: int
    output_encoding_type: int
    output_sample_rate: int
    output_bits_per_sample: int

    def to_dict(self) -> dict[str, int]:
        """camelCase, as the request carried it."""
        return {
            "inputEncodingType": int(self.input_encoding_type),
            "inputSampleRate": self.input_sample_rate,
            "inputBitsPerSample": self.input_bits_per_sample,
            "outputEncodingType": int(self.output_encoding_type),
            "outputSampleRate": self.output_sample_rate,
            "outputBitsPerSample": self.output_bits_per_sample,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRequest:
    """A validated session request.

    :param campaign_id: the public campaign name, a key of ``VoiceAiPlatform.Campaigns``.
    :param region_id: one of that campaign's allowed regions.
    :param transport_type: a :class:`TransportType` value.
    :param client_identifier: the caller's own identifier, or ``None``.
    :param dynamic_variables: prompt variables, string to string (read-only).
    :param metadata: call-record metadata, string to string (read-only).
    :param audio: the audio configuration.
    """

    campaign_id: str
    region_id: str
    transport_type: int
    client_identifier: str | None
    dynamic_variables: Mapping[str, str]
    metadata: Mapping[str, str]
    audio: AudioConfiguration

    def to_dict(self) -> dict[str, Any]:
        """A camelCase, JSON-ready copy (stored in queue entries; :meth:`from_dict` reads it back)."""
        return {
            "campaignId": self.campaign_id,
            "regionId": self.region_id,
            "transportType": int(self.transport_type),
            "clientIdentifier": self.client_identifier,
            "dynamicVariables": dict(self.dynamic_variables),
            "metadata": dict(self.metadata),
            "audioConfiguration": self.audio.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionRequest:
        """Rebuild a request from :meth:`to_dict` output (or the original's PascalCase queue payload).

        Every rule except campaign membership is checked again, so a tampered entry cannot slip through.

        :param d: the stored mapping; keys match case-insensitively.
        :raises PayloadError: when the mapping is not a valid request.
        """
        if not isinstance(d, Mapping):
            raise PayloadError("The stored request must be an object.")
        fields = _fields(d, "")
        campaign_id = fields.get("campaignid")
        region_id = fields.get("regionid")
        if not isinstance(campaign_id, str) or not campaign_id:
            raise PayloadError(CAMPAIGN_MESSAGE, "campaignId")
        if not isinstance(region_id, str) or not region_id:
            raise PayloadError(REGION_MESSAGE, "regionId")
        return _build(campaign_id, region_id, fields)


def parse_session_request(body: bytes, campaigns: Mapping[str, CampaignSettings]) -> SessionRequest:
    """Parse and validate a request body.

    :param body: the raw HTTP body.
    :param campaigns: ``VoiceAiPlatform.Campaigns``, keyed by public name (matched case-sensitively).
    :return: the validated request.
    :raises PayloadError: with the message to send as ``400 {"message": ...}``.
    """
    if len(body) > MAX_BODY_BYTES:
        raise PayloadError(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    try:
        # As the "utf-8-sig" codec (one leading BOM dropped), with the C decoder instead of a Python codec.
        text = (body[3:] if body.startswith(codecs.BOM_UTF8) else body).decode("utf-8")
        document = _DECODER.decode(text)
    except (UnicodeDecodeError, ValueError):
        raise PayloadError("The request body is not valid JSON.") from None
    except RecursionError:
        raise PayloadError("The request body is nested too deeply.") from None
    if not isinstance(document, _Members):
        raise PayloadError("The request body must be a JSON object.")
    fields = _fields(document, "")

    campaign_id = fields.get("campaignid")
    campaign = campaigns.get(campaign_id) if isinstance(campaign_id, str) and campaign_id else None
    if campaign is None:
        raise PayloadError(CAMPAIGN_MESSAGE, "campaignId")
    region_id = fields.get("regionid")
    if not isinstance(region_id, str) or not region_id or region_id not in campaign.allowed_region_ids:
        raise PayloadError(REGION_MESSAGE, "regionId")
    return _build(campaign_id, region_id, fields)


# ------------------------------------------------------------------------------------------ internals


class _Members(list):  # type: ignore[type-arg]
    """A JSON object's members in order with duplicates kept, so a repeated field can be refused."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: One decoder for every request: ``json.loads`` with these options would build a new one each call.
_DECODER = json.JSONDecoder(object_pairs_hook=_Members, parse_constant=_reject_constant)


def _fields(obj: Mapping[str, Any] | _Members, path: str) -> dict[str, Any]:
    """Members keyed by lower-cased name; a name given twice (in any casing) is an error."""
    pairs = obj if isinstance(obj, _Members) else list(obj.items())
    out: dict[str, Any] = {}
    for name, value in pairs:
        key = str(name).lower()
        if key in out:
            # The name is echoed back: a lone surrogate in it would make the answer itself unencodable.
            shown = str(name) if is_sendable(str(name)) else str(name).encode("utf-8", "backslashreplace").decode()
            where = f"{path}.{shown}" if path else shown
            raise PayloadError(f"The field {where} is given more than once (field names are case-insensitive).", where)
        out[key] = value
    return out


def _build(campaign_id: str, region_id: str, fields: dict[str, Any]) -> SessionRequest:
    transport = _transport(fields.get("transporttype"))
    client_identifier = _client_identifier(fields.get("clientidentifier"))
    dynamic_variables = _string_map(fields.get("dynamicvariables"), "dynamicVariables")
    metadata = _string_map(fields.get("metadata"), "metadata")
    audio = _audio(fields.get(_AUDIO.lower()), transport)
    return SessionRequest(
        campaign_id=campaign_id,
        region_id=region_id,
        transport_type=transport,
        client_identifier=client_identifier,
        dynamic_variables=dynamic_variables,
        metadata=metadata,
        audio=audio,
    )


def _is_integer(value: Any) -> bool:
    # JSON numbers decode to exactly int; a bool (an int subclass) or anything else is not one.
    return type(value) is int


def _transport(value: Any) -> TransportType:
    transport = _TRANSPORTS.get(value) if _is_integer(value) else None
    if transport is None:
        raise PayloadError("transportType must be 0 (WebSocket) or 1 (WebRTC).", "transportType")
    return transport  # type: ignore[return-value]


def _client_identifier(value: Any) -> str | None:
    field = "clientIdentifier"
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{field} must be a string or null.", field)
    if len(value) > CLIENT_IDENTIFIER_MAX:
        raise PayloadError(f"{field} must be at most {CLIENT_IDENTIFIER_MAX} characters.", field)
    if "/" in value or "\\" in value:
        raise PayloadError(f"{field} must not contain '/' or '\\'.", field)
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise PayloadError(f"{field} must not contain control characters.", field)
    if not is_sendable(value):
        raise PayloadError(unsendable_message(field), field)
    return value


def _string_map(value: Any, field: str) -> Mapping[str, str]:
    if value is None:
        raise PayloadError(f"{field} is required: an object of string values (use {{}} when there are none).", field)
    if not isinstance(value, (_Members, Mapping)):
        raise PayloadError(f"{field} must be an object of string values.", field)
    pairs = value if isinstance(value, _Members) else list(value.items())
    if len(pairs) > MAX_VARIABLES:
        raise PayloadError(f"{field} must have at most {MAX_VARIABLES} entries.", field)
    out: dict[str, str] = {}
    for key, item in pairs:
        key = str(key)
        if not is_sendable(key):
            # Checked first: the key cannot be echoed back in any message, having no UTF-8 form.
            raise PayloadError(unsendable_message(f"A key of {field}"), field)
        if key in out:
            raise PayloadError(f"{field} has the key {key!r} more than once.", f"{field}.{key}")
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise PayloadError(f"{field} keys must be 1 to {MAX_KEY_LENGTH} characters long.", field)
        if not isinstance(item, str):
            raise PayloadError(f"{field}.{key} must be a string.", f"{field}.{key}")
        if len(item) > MAX_VALUE_LENGTH:
            raise PayloadError(f"{field}.{key} must be at most {MAX_VALUE_LENGTH} characters.", f"{field}.{key}")
        if not is_sendable(item):
            raise PayloadError(unsendable_message(f"{field}.{key}"), f"{field}.{key}")
        out[key] = item
    return MappingProxyType(out)


def _audio(value: Any, transport: TransportType) -> AudioConfiguration:
    if value is None:
        raise PayloadError(f"{_AUDIO} is required: an object with {', '.join(_AUDIO_FIELDS)}.", _AUDIO)
    if not isinstance(value, (_Members, Mapping)):
        raise PayloadError(f"{_AUDIO} must be an object with {', '.join(_AUDIO_FIELDS)}.", _AUDIO)
    members = _fields(value, _AUDIO)
    numbers: dict[str, int] = {}
    for name, key in _AUDIO_KEYS:
        item = members.get(key)
        if not _is_integer(item):
            path = f"{_AUDIO}.{name}"
            if item is None:
                raise PayloadError(f"{path} is required and must be an integer.", path)
            raise PayloadError(f"{path} must be an integer.", path)
        numbers[name] = item
    input_encoding = _check_side("input", numbers["inputEncodingType"], numbers["inputSampleRate"],
                                 numbers["inputBitsPerSample"])
    output_encoding = _check_side("output", numbers["outputEncodingType"], numbers["outputSampleRate"],
                                  numbers["outputBitsPerSample"])
    if transport is TransportType.WEBRTC:
        _check_webrtc(numbers)
    return AudioConfiguration(
        input_encoding_type=input_encoding,
        input_sample_rate=numbers["inputSampleRate"],
        input_bits_per_sample=numbers["inputBitsPerSample"],
        output_encoding_type=output_encoding,
        output_sample_rate=numbers["outputSampleRate"],
        output_bits_per_sample=numbers["outputBitsPerSample"],
    )


def _check_side(side: str, encoding_value: int, rate: int, bits: int) -> AudioEncodingType:
    """Check one direction's codec, rate and sample size; returns its encoding."""
    # Every request passes here twice: a message's path is only spelled out for a refusal.
    encoding: AudioEncodingType | None = _ENCODINGS.get(encoding_value)  # type: ignore[assignment]
    if encoding is None:
        raise _side_error(side, "EncodingType", f"must be one of {_ENCODING_LIST}.")
    if encoding in DISABLED_ENCODINGS:
        raise _side_error(side, "EncodingType", f"{encoding.value} ({encoding.name}) is disabled on the platform; "
                                                f"use one of {_ENCODING_LIST}.")
    name = encoding.name
    if encoding in (AudioEncodingType.PCM, AudioEncodingType.WAV):
        if not 8000 <= rate <= 48000:
            raise _side_error(side, "SampleRate", f"must be an integer between 8000 and 48000 for {name}.")
        if bits not in (8, 16, 32):
            raise _side_error(side, "BitsPerSample", f"must be 8, 16 or 32 for {name}.")
    elif encoding is AudioEncodingType.OPUS:
        if rate not in OPUS_SAMPLE_RATES:
            rates = ", ".join(str(r) for r in OPUS_SAMPLE_RATES)
            raise _side_error(side, "SampleRate", f"must be one of {rates} for OPUS.")
        if bits != 16:
            raise _side_error(side, "BitsPerSample", "must be 16 for OPUS.")
    else:
        want_rate, want_bits = _FIXED_RATE_AND_BITS[encoding]
        if rate != want_rate:
            raise _side_error(side, "SampleRate", f"must be {want_rate} for {name}.")
        if bits != want_bits:
            raise _side_error(side, "BitsPerSample", f"must be {want_bits} for {name}.")
    return encoding


def _side_error(side: str, quantity: str, problem: str) -> PayloadError:
    path = f"{_AUDIO}.{side}{quantity}"
    return PayloadError(f"{path} {problem}", path)


#: G.711 (MULAW/ALAW), G.722 and G.729 each have a single rate and sample size.
_FIXED_RATE_AND_BITS = {
    AudioEncodingType.MULAW: (8000, 8),
    AudioEncodingType.ALAW: (8000, 8),
    AudioEncodingType.G722: (16000, 14),
    AudioEncodingType.G729: (8000, 8),
}


def _check_webrtc(numbers: dict[str, int]) -> None:
    allowed = "OPUS, MULAW, ALAW or G722"
    for side in ("input", "output"):
        path = f"{_AUDIO}.{side}EncodingType"
        if _ENCODINGS[numbers[f"{side}EncodingType"]] not in WEBRTC_ENCODINGS:
            raise PayloadError(f"{path} must be {allowed} when transportType is 1 (WebRTC).", path)
    for quantity in ("EncodingType", "SampleRate", "BitsPerSample"):
        if numbers[f"input{quantity}"] != numbers[f"output{quantity}"]:
            path = f"{_AUDIO}.output{quantity}"
            raise PayloadError(f"{path} must equal {_AUDIO}.input{quantity} when transportType is 1 (WebRTC).", path)
