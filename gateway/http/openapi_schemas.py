"""JSON Schemas of the REST bodies, for the OpenAPI document (:mod:`gateway.http.openapi`).

The session request's limits come from the constants :mod:`gateway.model.request` validates with, and its
enums from :mod:`gateway.model.enums`, so a changed limit changes the document too. The few rules the
validator spells inline (the PCM/WAV range and sample sizes, the one rate of each fixed-rate codec) are
mirrored in :data:`SIDE_RULES`; ``tests/gateway/http/test_openapi_document.py`` checks, body by body, that
the schema accepts exactly what :func:`gateway.model.request.parse_session_request` accepts.

Pure data: no Tornado, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.http.base import MAX_ID_LENGTH
from gateway.model.enums import (
    DISABLED_ENCODINGS,
    WEBRTC_ENCODINGS,
    AudioEncodingType,
    TransportType,
)
from gateway.model.request import (
    CLIENT_IDENTIFIER_MAX,
    MAX_KEY_LENGTH,
    MAX_VALUE_LENGTH,
    MAX_VARIABLES,
    OPUS_SAMPLE_RATES,
)

Schema = dict[str, Any]



@dataclass(frozen=True, slots=True)
class SideRule:
    """What one direction (input or output) may use with a group of codecs: either a list of rates or an
    inclusive range, and the sample sizes."""

    encodings: tuple[AudioEncodingType, ...]
    bits: tuple[int, ...]
    rates: tuple[int, ...] = ()
    rate_range: tuple[int, int] | None = None


_E = AudioEncodingType
#: As ``gateway.model.request._check_side`` (the PCM range and the fixed-rate codecs are spelled there inline).
SIDE_RULES = (
    SideRule((_E.PCM, _E.WAV), bits=(8, 16, 32), rate_range=(8000, 48000)),
    SideRule((_E.OPUS,), bits=(16,), rates=OPUS_SAMPLE_RATES),
    SideRule((_E.MULAW, _E.ALAW, _E.G729), bits=(8,), rates=(8000,)),
    SideRule((_E.G722,), bits=(14,), rates=(16000,)),
)
#: The encodings a request may name.
ENCODINGS = tuple(e for e in AudioEncodingType if e not in DISABLED_ENCODINGS)
_AUDIO_FIELDS = ("EncodingType", "SampleRate", "BitsPerSample")
#: Characters ``clientIdentifier`` must not contain: ``/``, ``\`` and the control characters (Unicode Cc).
CLIENT_IDENTIFIER_PATTERN = r"^[^/\\\x00-\x1f\x7f-\x9f]*$"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _names(encodings: tuple[AudioEncodingType, ...]) -> str:
    return ", ".join(f"{e.value} ({e.name})" for e in encodings)


def _one_of(values: tuple[int, ...]) -> Schema:
    return {"type": "integer", "enum": list(values)} if len(values) > 1 else {"type": "integer", "const": values[0]}


def _rate(rule: SideRule) -> Schema:
    if rule.rate_range is not None:
        return {"type": "integer", "minimum": rule.rate_range[0], "maximum": rule.rate_range[1]}
    return _one_of(rule.rates)


def _side(side: str) -> Schema:
    """One direction's rule: a codec group with its rates and sample sizes."""
    return {"anyOf": [{
        "title": f"{side} {'/'.join(e.name for e in rule.encodings)}",
        "properties": {
            f"{side}EncodingType": _one_of(tuple(int(e) for e in rule.encodings)),
            f"{side}SampleRate": _rate(rule),
            f"{side}BitsPerSample": _one_of(rule.bits),
        },
    } for rule in SIDE_RULES]}


def _webrtc_audio() -> Schema:
    """WebRTC: one of its codecs with input equal to output, every allowed combination spelled out."""
    variants = []
    for rule in SIDE_RULES:
        for encoding in (e for e in rule.encodings if e in WEBRTC_ENCODINGS):
            assert rule.rate_range is None, "a codec with a range of rates cannot be listed rate by rate"
            for rate in rule.rates:
                for size in rule.bits:
                    values = dict(zip(_AUDIO_FIELDS, (int(encoding), rate, size)))
                    variants.append({
                        "title": f"{encoding.name}, {rate} Hz, {size} bits",
                        "properties": {f"{side}{field}": {"const": value} for side in ("input", "output")
                                       for field, value in values.items()},
                    })
    return {
        "type": "object",
        "description": f"With transportType 1 (WebRTC): {_names(tuple(sorted(WEBRTC_ENCODINGS)))}, with input "
                       "equal to output.",
        "required": [f"{side}{field}" for side in ("input", "output") for field in _AUDIO_FIELDS],
        "anyOf": variants,
    }


def _rule_text(rule: SideRule) -> str:
    rates = (f"{rule.rate_range[0]}–{rule.rate_range[1]}" if rule.rate_range is not None
             else ", ".join(map(str, rule.rates)))
    return f"{'/'.join(e.name for e in rule.encodings)}: {', '.join(map(str, rule.bits))} bits at {rates} Hz"


def _audio() -> Schema:
    properties: Schema = {}
    for side in ("input", "output"):
        properties[f"{side}EncodingType"] = {
            "type": "integer", "enum": [int(e) for e in ENCODINGS],
            "description": f"{_names(ENCODINGS)}; "
                           f"{_names(tuple(DISABLED_ENCODINGS))} is disabled on the platform.",
        }
        properties[f"{side}SampleRate"] = {"type": "integer", "description": "Hz; which rates depends on the codec."}
        properties[f"{side}BitsPerSample"] = {"type": "integer", "description": "Depends on the codec."}
    rules = "; ".join(_rule_text(rule) for rule in SIDE_RULES)
    return {
        "type": "object",
        "description": f"Codec, rate and sample size of each direction. {rules}. The numbers are written without "
                       "a fraction or exponent (16000, not 16000.0). Field names match in any letter case; other "
                       "fields are ignored.",
        "required": [f"{side}{field}" for side in ("input", "output") for field in _AUDIO_FIELDS],
        "properties": properties,
        "allOf": [_side("input"), _side("output")],
    }


def _string_map(what: str) -> Schema:
    return {
        "type": "object",
        "description": f"{what}: string to string, {{}} when there are none. At most {MAX_VARIABLES} entries; "
                       f"keys 1–{MAX_KEY_LENGTH} characters, values up to {MAX_VALUE_LENGTH}.",
        "maxProperties": MAX_VARIABLES,
        "propertyNames": {"minLength": 1, "maxLength": MAX_KEY_LENGTH},
        "additionalProperties": {"type": "string", "maxLength": MAX_VALUE_LENGTH},
    }


def _session_request(transport: TransportType, audio: str) -> Schema:
    return {
        "type": "object",
        "title": f"{'WebRTC' if transport is TransportType.WEBRTC else 'WebSocket'} session request",
        "required": ["campaignId", "regionId", "transportType", "dynamicVariables", "metadata",
                     "audioConfiguration"],
        "properties": {
            "campaignId": {"type": "string", "minLength": 1,
                           "description": "A campaign of VoiceAiPlatform.Campaigns (matched case-sensitively)."},
            "regionId": {"type": "string", "minLength": 1, "description": "One of that campaign's AllowedRegionIds."},
            "transportType": {"type": "integer", "const": int(transport),
                              "description": f"{int(transport)} ({transport.name})."},
            "clientIdentifier": {
                "type": ["string", "null"], "maxLength": CLIENT_IDENTIFIER_MAX, "pattern": CLIENT_IDENTIFIER_PATTERN,
                "description": f"Optional; at most {CLIENT_IDENTIFIER_MAX} characters, without '/', '\\' or "
                               "control characters. The gateway sends \"{clientIdentifier}_{ip}\" to the "
                               "platform; empty counts as absent.",
            },
            "dynamicVariables": ref("StringMap"),
            "metadata": ref("StringMap"),
            "audioConfiguration": ref(audio),
        },
    }


def body_schemas() -> dict[str, Schema]:
    """The named schemas (``components.schemas``) of the REST routes."""
    return {**_request_schemas(), **_answer_schemas()}


def _request_schemas() -> dict[str, Schema]:
    return {
        "SessionRequest": {
            "description": "Field names match in any letter case (a name given twice is refused); unknown fields "
                           "are ignored. Strings must be valid Unicode (no unpaired surrogate such as \\ud800).",
            "oneOf": [ref("WebSocketSessionRequest"), ref("WebRtcSessionRequest")],
        },
        "WebSocketSessionRequest": _session_request(TransportType.WEBSOCKET, "AudioConfiguration"),
        "WebRtcSessionRequest": _session_request(TransportType.WEBRTC, "WebRtcAudioConfiguration"),
        "StringMap": _string_map("Prompt variables or call-record metadata"),
        "AudioConfiguration": _audio(),
        "WebRtcAudioConfiguration": _webrtc_audio(),
        "SessionEnded": {
            "type": "object", "required": ["ConversationSessionId"],
            "description": "The name matches in any letter case.",
            "properties": {"ConversationSessionId": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}},
        },
    }


def _answer_schemas() -> dict[str, Schema]:
    states = ["queued", "ready", "failed", "expired"]
    return {
        "Error": {
            "type": "object", "required": ["message"], "additionalProperties": False,
            "properties": {"message": {"type": "string", "minLength": 1,
                                       "description": "What went wrong, for a person to act on."}},
        },
        "SessionAdmitted": {
            "type": "object", "required": ["webSocketUrl"], "additionalProperties": False,
            "properties": {"webSocketUrl": {
                "type": "string", "pattern": "^wss?://",
                "description": "The platform's audio WebSocket; its token lives 5 minutes."}},
        },
        "SessionQueued": {
            "type": "object", "required": ["status", "uniqueRequestId", "queuePosition"], "additionalProperties": False,
            "properties": {
                "status": {"const": "queued"},
                "uniqueRequestId": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH,
                                    "description": "Register it on /sessionHub, or poll its status."},
                "queuePosition": {"type": "integer", "minimum": 1},
            },
        },
        "SessionStatus": {
            "type": "object", "required": ["status", "queuePosition"], "additionalProperties": False,
            "properties": {
                "status": {"enum": states},
                "queuePosition": {"type": ["integer", "null"], "minimum": 1,
                                  "description": "While queued; null otherwise."},
                "webSocketUrl": {"type": "string", "pattern": "^wss?://", "description": "Once ready."},
                "message": {"type": "string", "description": "Why it failed."},
            },
        },
        "LeaveConflict": {
            "type": "object", "required": ["status", "message"], "additionalProperties": False,
            "properties": {"status": {"enum": states[1:]}, "message": {"type": "string"}},
        },
        "Alive": {"type": "object", "required": ["status"], "properties": {"status": {"const": "alive"}}},
        "Ready": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ready"}}},
        "NotReady": {
            "type": "object", "required": ["message"], "additionalProperties": False,
            "description": "The store is unreachable (status \"unavailable\"), or the edge refused the connection.",
            "properties": {"status": {"const": "unavailable"}, "message": {"type": "string"}},
        },
    }
