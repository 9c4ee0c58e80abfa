"""The OpenAPI document itself: valid OpenAPI 3.1, served as built, covering every route and method the app
serves, and, for the session request, a schema that accepts exactly the bodies the validator accepts.

The agreement is checked body by body against :func:`gateway.model.request.parse_session_request`, so a limit
changed on either side (a constant, or a rule the validator spells inline) fails here. Two things a JSON
Schema cannot say are left out of the generated bodies: campaign membership (configuration, not shape), and
numbers with a zero fraction (``16000.0`` is an integer to JSON Schema; the gateway wants ``16000``, as the
document's description says). Strings hold no unpaired surrogate, which JSON Schema cannot refuse either.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import jsonschema
import tornado.web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from gateway.config import load_settings
from gateway.http.openapi import build_openapi
from gateway.model.errors import PayloadError
from gateway.model.request import parse_session_request
from tests.harness.stack import base_config, body_of

DOCUMENT = build_openapi()
SESSION_REQUEST = jsonschema.Draft202012Validator(
    {"$ref": "#/components/schemas/SessionRequest", "components": DOCUMENT["components"]})
CAMPAIGNS = load_settings(data=base_config(), environ={}).settings.platform.campaigns
#: Pages and files the gateway serves beside its JSON routes: not operations of the API.
NOT_OPERATIONS = {"/docs", "/static/vendor/swagger-ui/", "/admin", "/static/vendor/uplot/"}
METHODS = ("get", "post", "put", "patch", "delete")


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1")


async def test_the_served_document_is_the_built_one(stack_factory) -> None:
    stack = await stack_factory()
    response = await stack.call("GET", "/openapi.json")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert body_of(response) == json.loads(json.dumps(DOCUMENT))


def _implemented(handler: type[tornado.web.RequestHandler]) -> set[str]:
    return {m for m in METHODS if getattr(handler, m) is not getattr(tornado.web.RequestHandler, m)}


def _documented(route: tornado.web.URLSpec) -> tuple[str | None, set[str]]:
    """The document's path that ``route`` serves (its parameters filled in), and the methods it lists."""
    for path, item in DOCUMENT["paths"].items():
        if route.regex.fullmatch(re.sub(r"\{[^}]+\}", "some-id", path)):
            return path, {m for m in METHODS if m in item}
    return None, set()


async def test_every_route_and_method_of_the_app_is_documented(stack_factory) -> None:
    config = base_config()
    config["Admin"] = {"ApiToken": "admin-token-0123456789abcdef"}  # the admin API's routes are mounted too
    stack = await stack_factory(config=config)
    checked = set()
    for route in stack.gateway.routes():
        if any(route.regex.pattern.replace("\\", "").startswith(page) for page in NOT_OPERATIONS):
            continue
        path, methods = _documented(route)
        assert path is not None, f"{route.regex.pattern} is served but not in the OpenAPI document"
        assert methods == _implemented(route.handler_class), path
        checked.add(path)
    # Nothing is documented that the app does not serve.
    assert set(DOCUMENT["paths"]) == checked


# ----------------------------------------------------- the session request: schema against validator


def _accepts(body: dict[str, Any]) -> bool:
    try:
        parse_session_request(json.dumps(body, ensure_ascii=False).encode(), CAMPAIGNS)
    except PayloadError:
        return False
    return True


def _agree(body: dict[str, Any]) -> bool:
    """Assert that schema and validator agree on ``body``; returns whether it is valid."""
    by_schema = SESSION_REQUEST.is_valid(body)
    assert by_schema == _accepts(body), (
        f"the document says {'valid' if by_schema else 'invalid'}, the validator the opposite:\n"
        f"{json.dumps(body)[:600]}\n{[e.message[:200] for e in SESSION_REQUEST.iter_errors(body)][:3]}")
    return by_schema


def _audio(side_in: tuple[Any, Any, Any], side_out: tuple[Any, Any, Any]) -> dict[str, Any]:
    names = ("EncodingType", "SampleRate", "BitsPerSample")
    return {**{f"input{n}": v for n, v in zip(names, side_in)}, **{f"output{n}": v for n, v in zip(names, side_out)}}


def _body(transport: Any = 0, audio: Any = None, **fields: Any) -> dict[str, Any]:
    body = {"campaignId": "CampA", "regionId": "eu", "transportType": transport, "clientIdentifier": None,
            "dynamicVariables": {}, "metadata": {},
            "audioConfiguration": audio if audio is not None else _audio((1, 16000, 16), (1, 16000, 16))}
    body.update(fields)
    return body


ENCODINGS = range(10)
RATES = (0, 7999, 8000, 8001, 11025, 12000, 16000, 22050, 24000, 44100, 48000, 48001)
BITS = (0, 8, 14, 16, 24, 32, 33)


def test_every_codec_rate_and_sample_size_is_judged_alike() -> None:
    valid = {0: 0, 1: 0}
    pcm16 = (1, 16000, 16)
    for side in itertools.product(ENCODINGS, RATES, BITS):
        valid[0] += _agree(_body(0, _audio(side, pcm16))) + _agree(_body(0, _audio(pcm16, side)))
        valid[1] += _agree(_body(1, _audio(side, side)))  # WebRTC: only equal sides can be valid
    # Not vacuous: the sweep holds every WebRTC pair the document lists (OPUS at its 5 rates, MULAW, ALAW,
    # G722), and more valid WebSocket configurations than those.
    webrtc_pairs = DOCUMENT["components"]["schemas"]["WebRtcAudioConfiguration"]["anyOf"]
    assert valid[1] == len(webrtc_pairs) == 8
    assert valid[0] > 2 * len(webrtc_pairs)
    assert not _agree(_body(1, _audio((7, 48000, 16), (7, 16000, 16))))  # WebRTC sides must match


# Strings near each limit, with the characters clientIdentifier refuses (controls, '/' and '\') and some it
# takes (other Unicode); no surrogates.
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_SIZED = st.builds(lambda n, tail: "k" * n + tail, st.sampled_from([0, 1, 127, 128, 129, 209, 210, 211, 4095, 4096]),
                   st.sampled_from(["", "/", "\\", "\x00", "\x1f", "\x7f", "\x85", "\x9f", "\xa0", "\u2028", "é"]))
_NOT_INT = st.sampled_from(["16000", 16000.5, True, None, [], {}])
_MAP_VALUE = st.one_of(_TEXT, _SIZED, st.sampled_from([1, None, [], {}]))


def _maps() -> st.SearchStrategy[Any]:
    entries = st.dictionaries(st.one_of(_TEXT, _SIZED), _MAP_VALUE, max_size=3)
    many = st.builds(lambda n, value: {f"k{i}": value for i in range(n)}, st.sampled_from([63, 64, 65]),
                     st.sampled_from(["v", "v" * 4097]))
    return st.one_of(entries, many, st.sampled_from([None, "x", [], 5]))


_VALID_SIDES = [(1, 16000, 16), (2, 44100, 32), (7, 48000, 16), (3, 8000, 8), (5, 16000, 14)]


def _sides() -> st.SearchStrategy[tuple[Any, Any, Any]]:
    any_side = st.tuples(st.one_of(st.sampled_from(ENCODINGS), _NOT_INT), st.one_of(st.sampled_from(RATES), _NOT_INT),
                         st.one_of(st.sampled_from(BITS), _NOT_INT))
    return st.one_of(st.sampled_from(_VALID_SIDES), any_side)


@st.composite
def _audios(draw: st.DrawFn) -> Any:
    side = draw(_sides())
    audio = _audio(side, side) if draw(st.booleans()) else _audio(side, draw(_sides()))
    if draw(st.integers(0, 5)) == 0:
        audio.pop(draw(st.sampled_from(sorted(audio))))
    return audio


#: For each field, what may replace its valid value.
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "transportType": st.sampled_from([0, 1, 2, -1, "0", 0.5, True, None]),
    "clientIdentifier": st.one_of(st.none(), _TEXT, _SIZED, st.sampled_from([5, [], ""])),
    "dynamicVariables": _maps(),
    "metadata": _maps(),
    "audioConfiguration": st.one_of(_audios(), st.sampled_from([None, "x", []])),
}


@st.composite
def _bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with one or two of its fields replaced (or left out): one rule at a time is at stake,
    which a body wrong in many places would hide."""
    body = _body(draw(st.sampled_from([0, 1])), _audio(side := draw(st.sampled_from(_VALID_SIDES)), side))
    for name in draw(st.lists(st.sampled_from(sorted(_FIELDS)), min_size=1, max_size=2, unique=True)):
        if draw(st.integers(0, 7)) == 0:
            body.pop(name, None)
        else:
            body[name] = draw(_FIELDS[name])
    return body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies())
def test_the_session_request_schema_accepts_exactly_what_the_validator_accepts(body: dict[str, Any]) -> None:
    _agree(body)


def test_the_limits_at_their_edges() -> None:
    # Each pair: the most the validator takes, and one more; both sides must put the edge at the same place.
    edges = [
        ("clientIdentifier", "c" * 210, "c" * 211),
        ("clientIdentifier", "a\xa0b", "a/b"),
        ("clientIdentifier", "\u2028é", "a\\b"),
        ("clientIdentifier", "\x7e", "\x85"),
        ("clientIdentifier", "\xa0", "\x1f"),
        ("dynamicVariables", {f"k{i}": "v" for i in range(64)}, {f"k{i}": "v" for i in range(65)}),
        ("metadata", {"k" * 128: "v"}, {"k" * 129: "v"}),
        ("dynamicVariables", {"k": ""}, {"": "v"}),
        ("metadata", {"k": "v" * 4096}, {"k": "v" * 4097}),
    ]
    for field, at_limit, beyond in edges:
        assert _agree(_body(**{field: at_limit})), field
        assert not _agree(_body(**{field: beyond})), field
