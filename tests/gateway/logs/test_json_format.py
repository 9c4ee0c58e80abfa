"""The JSON log format: one object per line with time, level, logger, message, request id and the event's
fields, written through real loggers and handlers; the repeat throttle's summaries come out as JSON too."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from gateway.logs.context import RequestIdFilter, current_request_id
from gateway.logs.formats import JsonLineFormatter, formatter_for
from gateway.logs.throttle import RepeatThrottle
from tests.harness.fake_clock import FakeClock


@pytest.fixture
def output(request) -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    """A private logger writing JSON lines into a string, as the gateway's stderr handler does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger(f"t.json.{request.node.name}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream, handler
    logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_the_fixed_fields(output) -> None:
    logger, stream, _ = output
    before = datetime.now(UTC)
    logger.warning("slot %s held for %d s", "abc", 900)
    (line,) = _lines(stream)
    assert list(line)[:5] == ["time", "level", "logger", "message", "request_id"]
    assert line["level"] == "WARNING" and line["logger"] == logger.name
    assert line["message"] == "slot abc held for 900 s"
    assert line["request_id"] is None  # outside a request
    assert line["time"].endswith("Z")  # UTC, whatever the machine's zone
    written = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    assert abs((written - before).total_seconds()) < 5


def test_the_request_id_and_extra_fields_are_fields(output) -> None:
    logger, stream, _ = output
    token = current_request_id.set("req-42")
    try:
        logger.info("admitted", extra={"campaign": "CampA", "queue_position": 3, "wait": {"p50": 1.5}})
    finally:
        current_request_id.reset(token)
    (line,) = _lines(stream)
    assert line["request_id"] == "req-42"
    assert line["campaign"] == "CampA" and line["queue_position"] == 3 and line["wait"] == {"p50": 1.5}


def test_an_exception_is_a_field_and_the_record_stays_on_one_line(output) -> None:
    logger, stream, _ = output
    try:
        raise ValueError("bad value\nwith a second line")
    except ValueError:
        logger.exception("platform call failed")
    assert len(stream.getvalue().splitlines()) == 1
    (line,) = _lines(stream)
    assert line["message"] == "platform call failed"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad value\nwith a second line" in line["exception"]


def test_a_message_with_newlines_cannot_forge_a_second_record(output) -> None:
    logger, stream, _ = output
    logger.warning("client said %s", 'hi\n{"level": "CRITICAL", "message": "forged"}')
    (line,) = _lines(stream)
    assert line["level"] == "WARNING" and "forged" in line["message"]


def test_the_repeat_throttles_summaries_are_json_records_with_their_counts(output) -> None:
    logger, stream, handler = output
    clock = FakeClock(start=0.0)
    throttle = RepeatThrottle(handler, interval=10.0, clock=clock, timer=False)
    handler.addFilter(throttle)
    try:
        token = current_request_id.set("req-flood")
        try:
            for n in range(5):
                logger.warning("store unavailable for request %d", n)
        finally:
            current_request_id.reset(token)
        clock.advance(11)
        throttle.flush_due()
    finally:
        handler.removeFilter(throttle)
    first, summary = _lines(stream)
    assert first["message"] == "store unavailable for request 0" and first["request_id"] == "req-flood"
    assert summary["level"] == "WARNING" and summary["logger"] == logger.name
    assert summary["repeat_summary"] is True and summary["suppressed"] == 4 and summary["span_seconds"] == 10.0
    assert summary["message"].startswith("suppressed 4 similar messages")
    assert summary["request_id"] is None  # a summary belongs to no request


def test_the_text_format_is_unchanged_by_default() -> None:
    record = logging.LogRecord("gateway", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    record.request_id = "r1"
    assert formatter_for("text").format(record).endswith("INFO    gateway [r1] hello there")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        formatter_for("xml")


async def test_the_access_log_and_an_admin_change_carry_their_facts_as_fields(stack_factory) -> None:
    from tests.harness.stack import base_config

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(RequestIdFilter())
    config = base_config()
    config["Admin"] = {"ApiToken": "admin-token-0123456789abcdef"}
    stack = await stack_factory(config=config)
    loggers = [logging.getLogger("gateway.access"), logging.getLogger("gateway.admin")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)  # the access log is INFO
    try:
        await stack.call("GET", "/healthz?probe=1")
        await stack.call("POST", "/api/admin/dispatch/pause",
                         headers={"Authorization": "Bearer admin-token-0123456789abcdef", "X-Operator": "alice"})
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
    lines = _lines(stream)
    access = next(line for line in lines if line["logger"] == "gateway.access" and line.get("path") == "/healthz")
    assert (access["status"], access["method"], access["client_ip"]) == (200, "GET", "127.0.0.1")
    assert isinstance(access["duration_ms"], float) and access["request_id"]
    change = next(line for line in lines if line["logger"] == "gateway.admin")
    assert (change["admin_action"], change["operator"], change["operator_ip"]) == ("pause", "alice", "127.0.0.1")


async def test_behind_a_known_proxy_the_access_log_names_the_visitor(stack_factory) -> None:
    """With ForwardedHeaders.KnownProxies the access log shows the address the proxy forwarded for (a
    load balancer's own address on every line would tell an operator nothing); from anyone else the header
    is ignored."""
    from tests.harness.stack import base_config

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    logger = logging.getLogger("gateway.access")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for proxies, probe in ((["127.0.0.1"], "trusted"), ([], "ignored")):
            stack = await stack_factory(config=base_config(ForwardedHeaders={"KnownProxies": proxies}))
            await stack.call("GET", f"/healthz?probe={probe}", headers={"X-Forwarded-For": "203.0.113.9"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    seen = {line["message"].split("probe=")[1].split(" ")[0]: line["client_ip"] for line in _lines(stream)
            if "probe=" in line["message"]}
    assert seen == {"trusted": "203.0.113.9", "ignored": "127.0.0.1"}
