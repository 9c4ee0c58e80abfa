"""Session-request parsing: the full table of refused bodies with their exact 400 messages, and what passes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gateway.config.settings import CampaignSettings
from gateway.model.enums import AudioEncodingType, TransportType
from gateway.model.request import (
    CLIENT_IDENTIFIER_MAX,
    MAX_BODY_BYTES,
    AudioConfiguration,
    PayloadError,
    SessionRequest,
    parse_session_request,
)

CAMPAIGNS = {
    "IqraWebsiteCampaign": CampaignSettings(
        name="IqraWebsiteCampaign", business_id="1", web_campaign_id="w", allowed_region_ids=("EU-DE", "OM-MCT")
    ),
    "Other": CampaignSettings(name="Other", business_id="2", web_campaign_id="w2", allowed_region_ids=("us-east-1",)),
}
CAMPAIGN = "Invalid or missing CampaignId."
REGION = "Invalid or missing RegionId, or RegionId not allowed for this campaign."
ENCODINGS = "1 (PCM), 2 (WAV), 3 (MULAW), 4 (ALAW), 5 (G722), 6 (G729), 7 (OPUS)"
AUDIO_FIELDS = "inputEncodingType, inputSampleRate, inputBitsPerSample, outputEncodingType, outputSampleRate, outputBitsPerSample"


def valid() -> dict[str, Any]:
    """The API reference's example request."""
    return {
        "campaignId": "IqraWebsiteCampaign",
        "regionId": "EU-DE",
        "transportType": 0,
        "clientIdentifier": "user-abcdef-12345",
        "dynamicVariables": {"userName": "Abdullah", "language": "en"},
        "metadata": {"source": "homepage_widget"},
        "audioConfiguration": {
            "inputEncodingType": 1,
            "inputSampleRate": 16000,
            "inputBitsPerSample": 16,
            "outputEncodingType": 1,
            "outputSampleRate": 16000,
            "outputBitsPerSample": 16,
        },
    }


def audio(enc: int, rate: int, bits: int, out: tuple[int, int, int] | None = None) -> dict[str, int]:
    o = out or (enc, rate, bits)
    return {
        "inputEncodingType": enc,
        "inputSampleRate": rate,
        "inputBitsPerSample": bits,
        "outputEncodingType": o[0],
        "outputSampleRate": o[1],
        "outputBitsPerSample": o[2],
    }


def body(**changes: Any) -> bytes:
    """:func:`valid` with fields replaced; ``...`` removes a field; ``audio__x`` edits audioConfiguration.x."""
    data = copy.deepcopy(valid())
    for key, value in changes.items():
        target, name = (data["audioConfiguration"], key[7:]) if key.startswith("audio__") else (data, key)
        if value is ...:
            target.pop(name, None)
        else:
            target[name] = value
    return json.dumps(data).encode()


def parse(raw: bytes) -> SessionRequest:
    return parse_session_request(raw, CAMPAIGNS)


# (id, body, exact message, field)
REFUSED: list[tuple[str, bytes, str, str | None]] = [
    # -- the body as a whole
    ("empty body", b"", "The request body is not valid JSON.", None),
    ("malformed json", b'{"campaignId": ', "The request body is not valid JSON.", None),
    ("not utf-8", b'{"campaignId": "\xff"}', "The request body is not valid JSON.", None),
    ("NaN constant", body(transportType=0).replace(b'"transportType": 0', b'"transportType": NaN'), "The request body is not valid JSON.", None),
    ("deep nesting", b"[" * 30000 + b"]" * 30000, "The request body is nested too deeply.", None),
    ("array body", b"[]", "The request body must be a JSON object.", None),
    ("string body", b'"hello"', "The request body must be a JSON object.", None),
    ("null body", b"null", "The request body must be a JSON object.", None),
    ("too large", b" " * (MAX_BODY_BYTES + 1), f"The request body is larger than {MAX_BODY_BYTES} bytes.", None),
    (
        "field twice in two casings",
        body().replace(b'"regionId"', b'"RegionId": "EU-DE", "regionId"'),
        "The field regionId is given more than once (field names are case-insensitive).",
        "regionId",
    ),
    # -- campaign first, with the original's exact message
    ("campaign missing", body(campaignId=...), CAMPAIGN, "campaignId"),
    ("campaign empty", body(campaignId=""), CAMPAIGN, "campaignId"),
    ("campaign null", body(campaignId=None), CAMPAIGN, "campaignId"),
    ("campaign number", body(campaignId=5), CAMPAIGN, "campaignId"),
    ("campaign unknown", body(campaignId="Nope"), CAMPAIGN, "campaignId"),
    ("campaign wrong case", body(campaignId="iqrawebsitecampaign"), CAMPAIGN, "campaignId"),
    ("campaign checked before region", body(campaignId="Nope", regionId=...), CAMPAIGN, "campaignId"),
    ("campaign checked before audio", body(campaignId=..., audioConfiguration=...), CAMPAIGN, "campaignId"),
    # -- then region, exactly the original's message
    ("region missing", body(regionId=...), REGION, "regionId"),
    ("region empty", body(regionId=""), REGION, "regionId"),
    ("region number", body(regionId=1), REGION, "regionId"),
    ("region of another campaign", body(regionId="us-east-1"), REGION, "regionId"),
    ("region wrong case", body(regionId="eu-de"), REGION, "regionId"),
    ("region before transport", body(regionId="XX", transportType="x"), REGION, "regionId"),
    # -- transportType
    ("transport missing", body(transportType=...), "transportType must be 0 (WebSocket) or 1 (WebRTC).", "transportType"),
    ("transport 2", body(transportType=2), "transportType must be 0 (WebSocket) or 1 (WebRTC).", "transportType"),
    ("transport -1", body(transportType=-1), "transportType must be 0 (WebSocket) or 1 (WebRTC).", "transportType"),
    ("transport string", body(transportType="0"), "transportType must be 0 (WebSocket) or 1 (WebRTC).", "transportType"),
    ("transport name", body(transportType="WebSocket"), "transportType must be 0 (WebSocket) or 1 (WebRTC).", "transportType"),
    ("transport bool", body(transportType=False), "transportType must be 0 (WebSocket) or 1 (WebRTC).", "transportType"),
    ("transport float", body(transportType=0.0), "transportType must be 0 (WebSocket) or 1 (WebRTC).", "transportType"),
    # -- clientIdentifier
    ("cid number", body(clientIdentifier=42), "clientIdentifier must be a string or null.", "clientIdentifier"),
    ("cid object", body(clientIdentifier={}), "clientIdentifier must be a string or null.", "clientIdentifier"),
    (
        "cid too long",
        body(clientIdentifier="x" * (CLIENT_IDENTIFIER_MAX + 1)),
        "clientIdentifier must be at most 210 characters.",
        "clientIdentifier",
    ),
    ("cid slash", body(clientIdentifier="a/b"), "clientIdentifier must not contain '/' or '\\'.", "clientIdentifier"),
    ("cid backslash", body(clientIdentifier="a\\b"), "clientIdentifier must not contain '/' or '\\'.", "clientIdentifier"),
    ("cid newline", body(clientIdentifier="a\nb"), "clientIdentifier must not contain control characters.", "clientIdentifier"),
    ("cid NUL", body(clientIdentifier="a\u0000b"), "clientIdentifier must not contain control characters.", "clientIdentifier"),
    ("cid DEL", body(clientIdentifier="a\u007fb"), "clientIdentifier must not contain control characters.", "clientIdentifier"),
    # -- dynamicVariables and metadata
    (
        "variables missing",
        body(dynamicVariables=...),
        "dynamicVariables is required: an object of string values (use {} when there are none).",
        "dynamicVariables",
    ),
    (
        "variables null",
        body(dynamicVariables=None),
        "dynamicVariables is required: an object of string values (use {} when there are none).",
        "dynamicVariables",
    ),
    ("variables list", body(dynamicVariables=[]), "dynamicVariables must be an object of string values.", "dynamicVariables"),
    ("variables string", body(dynamicVariables="a=b"), "dynamicVariables must be an object of string values.", "dynamicVariables"),
    ("variable number", body(dynamicVariables={"age": 3}), "dynamicVariables.age must be a string.", "dynamicVariables.age"),
    ("variable null", body(dynamicVariables={"age": None}), "dynamicVariables.age must be a string.", "dynamicVariables.age"),
    ("variable empty key", body(dynamicVariables={"": "x"}), "dynamicVariables keys must be 1 to 128 characters long.", "dynamicVariables"),
    ("variable long key", body(dynamicVariables={"k" * 129: "x"}), "dynamicVariables keys must be 1 to 128 characters long.", "dynamicVariables"),
    (
        "variable long value",
        body(dynamicVariables={"k": "v" * 4097}),
        "dynamicVariables.k must be at most 4096 characters.",
        "dynamicVariables.k",
    ),
    (
        "too many variables",
        body(dynamicVariables={f"k{i}": "v" for i in range(65)}),
        "dynamicVariables must have at most 64 entries.",
        "dynamicVariables",
    ),
    (
        "variable key twice",
        body(dynamicVariables={}).replace(b'"dynamicVariables": {}', b'"dynamicVariables": {"a": "1", "a": "2"}'),
        "dynamicVariables has the key 'a' more than once.",
        "dynamicVariables.a",
    ),
    (
        "metadata missing",
        body(metadata=...),
        "metadata is required: an object of string values (use {} when there are none).",
        "metadata",
    ),
    ("metadata list", body(metadata=["a"]), "metadata must be an object of string values.", "metadata"),
    ("metadata bool value", body(metadata={"vip": True}), "metadata.vip must be a string.", "metadata.vip"),
    ("metadata long value", body(metadata={"k": "v" * 4097}), "metadata.k must be at most 4096 characters.", "metadata.k"),
    # -- audioConfiguration shape and types
    ("audio missing", body(audioConfiguration=...), f"audioConfiguration is required: an object with {AUDIO_FIELDS}.", "audioConfiguration"),
    ("audio null", body(audioConfiguration=None), f"audioConfiguration is required: an object with {AUDIO_FIELDS}.", "audioConfiguration"),
    ("audio list", body(audioConfiguration=[1]), f"audioConfiguration must be an object with {AUDIO_FIELDS}.", "audioConfiguration"),
    (
        "audio field missing",
        body(audio__outputBitsPerSample=...),
        "audioConfiguration.outputBitsPerSample is required and must be an integer.",
        "audioConfiguration.outputBitsPerSample",
    ),
    (
        "audio field null",
        body(audio__inputSampleRate=None),
        "audioConfiguration.inputSampleRate is required and must be an integer.",
        "audioConfiguration.inputSampleRate",
    ),
    (
        "audio float",
        body(audio__inputSampleRate=16000.0),
        "audioConfiguration.inputSampleRate must be an integer.",
        "audioConfiguration.inputSampleRate",
    ),
    (
        "audio string number",
        body(audio__inputSampleRate="16000"),
        "audioConfiguration.inputSampleRate must be an integer.",
        "audioConfiguration.inputSampleRate",
    ),
    (
        "audio bool",
        body(audio__inputEncodingType=True),
        "audioConfiguration.inputEncodingType must be an integer.",
        "audioConfiguration.inputEncodingType",
    ),
    (
        "audio field twice",
        body().replace(b'"inputSampleRate": 16000', b'"inputSampleRate": 16000, "InputSampleRate": 8000'),
        "The field audioConfiguration.InputSampleRate is given more than once (field names are case-insensitive).",
        "audioConfiguration.InputSampleRate",
    ),
    # -- encodings
    (
        "encoding 0",
        body(audio__inputEncodingType=0),
        f"audioConfiguration.inputEncodingType must be one of {ENCODINGS}.",
        "audioConfiguration.inputEncodingType",
    ),
    (
        "encoding 9",
        body(audio__outputEncodingType=9),
        f"audioConfiguration.outputEncodingType must be one of {ENCODINGS}.",
        "audioConfiguration.outputEncodingType",
    ),
    (
        "encoding MPEG disabled",
        body(audio__inputEncodingType=8),
        f"audioConfiguration.inputEncodingType 8 (MPEG) is disabled on the platform; use one of {ENCODINGS}.",
        "audioConfiguration.inputEncodingType",
    ),
    # -- PCM / WAV
    (
        "PCM rate low",
        body(audioConfiguration=audio(1, 7999, 16)),
        "audioConfiguration.inputSampleRate must be an integer between 8000 and 48000 for PCM.",
        "audioConfiguration.inputSampleRate",
    ),
    (
        "PCM rate high",
        body(audioConfiguration=audio(1, 16000, 16, (1, 48001, 16))),
        "audioConfiguration.outputSampleRate must be an integer between 8000 and 48000 for PCM.",
        "audioConfiguration.outputSampleRate",
    ),
    (
        "PCM 24 bit",
        body(audioConfiguration=audio(1, 16000, 24)),
        "audioConfiguration.inputBitsPerSample must be 8, 16 or 32 for PCM.",
        "audioConfiguration.inputBitsPerSample",
    ),
    (
        "WAV 12 bit",
        body(audioConfiguration=audio(2, 16000, 12)),
        "audioConfiguration.inputBitsPerSample must be 8, 16 or 32 for WAV.",
        "audioConfiguration.inputBitsPerSample",
    ),
    (
        "WAV huge rate",
        body(audioConfiguration=audio(2, 10**30, 16)),
        "audioConfiguration.inputSampleRate must be an integer between 8000 and 48000 for WAV.",
        "audioConfiguration.inputSampleRate",
    ),
    # -- OPUS
    (
        "OPUS 44100",
        body(audioConfiguration=audio(7, 44100, 16)),
        "audioConfiguration.inputSampleRate must be one of 8000, 12000, 16000, 24000, 48000 for OPUS.",
        "audioConfiguration.inputSampleRate",
    ),
    (
        "OPUS 8 bit",
        body(audioConfiguration=audio(7, 48000, 8)),
        "audioConfiguration.inputBitsPerSample must be 16 for OPUS.",
        "audioConfiguration.inputBitsPerSample",
    ),
    # -- G.711, G.722, G.729
    (
        "MULAW 16k",
        body(audioConfiguration=audio(3, 16000, 8)),
        "audioConfiguration.inputSampleRate must be 8000 for MULAW.",
        "audioConfiguration.inputSampleRate",
    ),
    (
        "ALAW 16 bit",
        body(audioConfiguration=audio(4, 8000, 16)),
        "audioConfiguration.inputBitsPerSample must be 8 for ALAW.",
        "audioConfiguration.inputBitsPerSample",
    ),
    (
        "G722 8k",
        body(audioConfiguration=audio(5, 8000, 14)),
        "audioConfiguration.inputSampleRate must be 16000 for G722.",
        "audioConfiguration.inputSampleRate",
    ),
    (
        "G722 16 bit",
        body(audioConfiguration=audio(5, 16000, 16)),
        "audioConfiguration.inputBitsPerSample must be 14 for G722.",
        "audioConfiguration.inputBitsPerSample",
    ),
    (
        "G729 16 bit",
        body(audioConfiguration=audio(1, 16000, 16, (6, 8000, 16))),
        "audioConfiguration.outputBitsPerSample must be 8 for G729.",
        "audioConfiguration.outputBitsPerSample",
    ),
    # -- WebRTC
    (
        "WebRTC PCM",
        body(transportType=1),
        "audioConfiguration.inputEncodingType must be OPUS, MULAW, ALAW or G722 when transportType is 1 (WebRTC).",
        "audioConfiguration.inputEncodingType",
    ),
    (
        "WebRTC output WAV",
        body(transportType=1, audioConfiguration=audio(7, 48000, 16, (2, 48000, 16))),
        "audioConfiguration.outputEncodingType must be OPUS, MULAW, ALAW or G722 when transportType is 1 (WebRTC).",
        "audioConfiguration.outputEncodingType",
    ),
    (
        "WebRTC asymmetric encodings",
        body(transportType=1, audioConfiguration=audio(7, 16000, 16, (3, 8000, 8))),
        "audioConfiguration.outputEncodingType must equal audioConfiguration.inputEncodingType when transportType is 1 (WebRTC).",
        "audioConfiguration.outputEncodingType",
    ),
    (
        "WebRTC asymmetric rates",
        body(transportType=1, audioConfiguration=audio(7, 16000, 16, (7, 48000, 16))),
        "audioConfiguration.outputSampleRate must equal audioConfiguration.inputSampleRate when transportType is 1 (WebRTC).",
        "audioConfiguration.outputSampleRate",
    ),
]


@pytest.mark.parametrize(("raw", "message", "field"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_with_exact_message(raw: bytes, message: str, field: str | None) -> None:
    with pytest.raises(PayloadError) as caught:
        parse(raw)
    assert caught.value.message == message
    assert caught.value.field == field
    assert str(caught.value) == message


def test_api_reference_example_is_accepted() -> None:
    request = parse(body())
    assert request == SessionRequest(
        campaign_id="IqraWebsiteCampaign",
        region_id="EU-DE",
        transport_type=TransportType.WEBSOCKET,
        client_identifier="user-abcdef-12345",
        dynamic_variables={"userName": "Abdullah", "language": "en"},
        metadata={"source": "homepage_widget"},
        audio=AudioConfiguration(
            input_encoding_type=AudioEncodingType.PCM,
            input_sample_rate=16000,
            input_bits_per_sample=16,
            output_encoding_type=AudioEncodingType.PCM,
            output_sample_rate=16000,
            output_bits_per_sample=16,
        ),
    )


def test_field_names_are_case_insensitive_and_unknown_fields_ignored() -> None:
    raw = json.dumps(
        {
            "CAMPAIGNID": "Other",
            "RegionId": "us-east-1",
            "transporttype": 1,
            "ClientIdentifier": None,
            "DynamicVariables": {"Name": "x"},
            "METADATA": {},
            "AudioConfiguration": {
                "InputEncodingType": 3,
                "inputsamplerate": 8000,
                "INPUTBITSPERSAMPLE": 8,
                "OutputEncodingType": 3,
                "OutputSampleRate": 8000,
                "OutputBitsPerSample": 8,
                "bufferThresholdMs": 20,
            },
            "somethingElse": [1, 2, 3],
        }
    ).encode()
    request = parse(raw)
    assert (request.campaign_id, request.region_id, request.transport_type) == ("Other", "us-east-1", TransportType.WEBRTC)
    assert request.client_identifier is None
    assert dict(request.dynamic_variables) == {"Name": "x"}  # variable names keep their case
    assert request.audio.input_encoding_type == AudioEncodingType.MULAW


@pytest.mark.parametrize(
    ("transport", "config"),
    [
        (0, audio(1, 8000, 8)),
        (0, audio(2, 48000, 32)),
        (0, audio(1, 44100, 16)),
        (0, audio(7, 12000, 16, (7, 24000, 16))),
        (0, audio(3, 8000, 8, (1, 24000, 16))),
        (0, audio(6, 8000, 8)),
        (0, audio(5, 16000, 14)),
        (1, audio(7, 48000, 16)),
        (1, audio(4, 8000, 8)),
        (1, audio(5, 16000, 14)),
    ],
)
def test_accepted_audio_configurations(transport: int, config: dict[str, int]) -> None:
    request = parse(body(transportType=transport, audioConfiguration=config))
    assert request.audio.to_dict() == config


@pytest.mark.parametrize("value", [None, ""])
def test_absent_or_empty_client_identifier_is_none(value: str | None) -> None:
    assert parse(body(clientIdentifier=value)).client_identifier is None
    assert parse(body(clientIdentifier=...)).client_identifier is None


def test_limits_are_inclusive() -> None:
    request = parse(
        body(
            clientIdentifier="é" * CLIENT_IDENTIFIER_MAX,
            dynamicVariables={f"{i:0>128}": "v" for i in range(64)},
            metadata={"k": "v" * 4096},
        )
    )
    assert len(request.client_identifier or "") == CLIENT_IDENTIFIER_MAX
    assert len(request.dynamic_variables) == 64 and len(request.metadata["k"]) == 4096
    # The gateway appends "_" and the longest textual IP; the platform's 256 limit still holds.
    assert CLIENT_IDENTIFIER_MAX + len("_") + len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255") == 256


def test_request_is_read_only_and_round_trips() -> None:
    request = parse(body())
    with pytest.raises(TypeError):
        request.metadata["x"] = "y"  # type: ignore[index]
    stored = json.loads(json.dumps(request.to_dict()))
    assert SessionRequest.from_dict(stored) == request


def test_from_dict_reads_the_original_pascal_case_queue_payload() -> None:
    pascal = {
        "CampaignId": "IqraWebsiteCampaign",
        "RegionId": "EU-DE",
        "TransportType": 0,
        "ClientIdentifier": None,
        "DynamicVariables": {},
        "Metadata": {},
        "AudioConfiguration": {k[0].upper() + k[1:]: v for k, v in valid()["audioConfiguration"].items()},
    }
    request = SessionRequest.from_dict(pascal)
    assert request.campaign_id == "IqraWebsiteCampaign" and request.audio.output_sample_rate == 16000


def test_from_dict_rechecks_the_rules() -> None:
    stored = parse(body()).to_dict()
    stored["audioConfiguration"]["inputSampleRate"] = 1
    with pytest.raises(PayloadError) as caught:
        SessionRequest.from_dict(stored)
    assert caught.value.field == "audioConfiguration.inputSampleRate"


def _with_lone_surrogate(document: dict[str, Any]) -> bytes:
    """JSON for ``document`` where every ``@`` becomes the escape of a lone surrogate (valid JSON text)."""
    return json.dumps(document).replace("@", "\\ud800").encode()


@pytest.mark.parametrize(
    ("where", "field", "shown"),
    [
        ("clientIdentifier", "clientIdentifier", "clientIdentifier"),
        ("dynamicVariables value", "dynamicVariables.userName", "dynamicVariables.userName"),
        ("dynamicVariables key", "dynamicVariables", "A key of dynamicVariables"),
        ("metadata value", "metadata.source", "metadata.source"),
        ("metadata key", "metadata", "A key of metadata"),
    ],
)
def test_text_without_a_utf8_form_is_refused_naming_the_field(where: str, field: str, shown: str) -> None:
    # A lone surrogate decodes from JSON but cannot be sent to the platform: accepted, it would fail every
    # dispatch of the entry, far from its source. Refused here, the message names the field.
    document = valid()
    if where == "clientIdentifier":
        document["clientIdentifier"] = "id-@"
    elif where.endswith("value"):
        document[field.split(".")[0]][field.split(".")[1]] = "x@y"
    else:
        document[field]["k@"] = "v"
    with pytest.raises(PayloadError) as caught:
        parse(_with_lone_surrogate(document))
    assert caught.value.field == field
    assert caught.value.message.startswith(f"{shown} contains a character that is not valid Unicode")
    # The message itself must be sendable (it is echoed to the client as UTF-8 JSON).
    caught.value.message.encode("utf-8")


def test_a_repeated_field_name_without_a_utf8_form_is_echoed_escaped() -> None:
    raw = b'{"a\\ud800": 1, "A\\ud800": 2}'
    with pytest.raises(PayloadError) as caught:
        parse(raw)
    assert caught.value.message == "The field A\\ud800 is given more than once (field names are case-insensitive)."
    caught.value.message.encode("utf-8")


def test_stored_requests_with_unsendable_text_are_refused_too() -> None:
    stored = SessionRequest.from_dict(json.loads(body())).to_dict()
    stored["dynamicVariables"] = {"userName": "\ud800"}
    with pytest.raises(PayloadError):
        SessionRequest.from_dict(stored)


def test_astral_characters_and_paired_surrogate_escapes_are_accepted() -> None:
    # A correctly paired escape (U+1F600) is ordinary text with a UTF-8 form.
    raw = json.dumps(dict(valid(), metadata={"smile": "@"})).replace("@", "\\ud83d\\ude00").encode()
    assert parse(raw).metadata == {"smile": "\U0001F600"}
