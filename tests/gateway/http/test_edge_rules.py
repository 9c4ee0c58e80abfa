"""The edge's rules without a socket: connection caps, head limits, the refusal bytes, the Limits section."""

from __future__ import annotations

import pytest
import ujson

from gateway.config import ConfigError, load_settings
from gateway.config.settings import LimitsSettings
from gateway.http.edge_rules import (
    BODY_TOO_LARGE,
    HEAD_TOO_LARGE,
    MAX_TARGET_BYTES,
    TARGET_TOO_LONG,
    TOO_MANY_FROM_CLIENT,
    TOO_MANY_IN_TOTAL,
    ConnectionCaps,
    client_key,
    error_response,
    head_error,
    oversize_head_error,
)
from tests.harness.stack import base_config


def test_caps_count_per_client_and_in_total_and_forget_closed_clients():
    caps = ConnectionCaps(total=3, per_client=2)
    assert caps.admit("a") is None and caps.admit("a") is None
    assert caps.admit("a") is TOO_MANY_FROM_CLIENT
    assert caps.admit("b") is None
    assert caps.admit("c") is TOO_MANY_IN_TOTAL
    caps.release("a")
    assert caps.admit("c") is None
    for key in ("a", "b", "c"):
        caps.release(key)
    assert caps.open_total == 0 and caps.open_from("a") == 0
    assert not caps._open  # no entry left behind for an address that has gone


def test_zero_means_no_cap():
    caps = ConnectionCaps(total=0, per_client=0)
    assert all(caps.admit("a") is None for _ in range(10_000))


def test_an_ipv6_client_is_its_slash_64_and_an_ipv4_one_its_address():
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.7") == "192.0.2.7" and client_key("192.0.2.8") == "192.0.2.8"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key("2001:db8:1:2:aaaa::1", 48) == client_key("2001:db8:1:9::1", 48) == "2001:db8:1::/48"
    assert client_key("") == ""


def test_head_rules():
    assert head_error("/x?" + "q" * MAX_TARGET_BYTES, None) is TARGET_TOO_LONG
    assert head_error("/x", "2000000") is BODY_TOO_LARGE
    assert head_error("/x", "2000000, 2000000") is BODY_TOO_LARGE
    assert head_error("/x", "70000") is None  # a route's own limit decides below the server's
    assert head_error("/x", "many") is None  # left to Tornado's parser, which refuses it
    assert oversize_head_error(b"GET /" + b"a" * 40_000) is TARGET_TOO_LONG
    assert oversize_head_error(b"\r\nGET /a HTTP/1.1\r\nX: " + b"h" * 40_000) is HEAD_TOO_LARGE


def test_refusals_are_whole_http_responses_with_a_json_message():
    raw = error_response(TOO_MANY_IN_TOTAL)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 503 Service Unavailable"
    assert b"Retry-After: 5" in lines and b"Connection: close" in lines
    assert f"Content-Length: {len(body)}".encode() in lines
    assert ujson.loads(body) == {"message": TOO_MANY_IN_TOTAL.message}
    assert error_response(TOO_MANY_IN_TOTAL, with_body=False) == head + b"\r\n\r\n"


def test_the_limits_section_binds_with_defaults_and_zero_for_unlimited():
    assert load_settings(data=base_config(), environ={}).settings.limits == LimitsSettings()
    loaded = load_settings(data=base_config(Limits={
        "RequestHeadersTimeoutSeconds": 10, "KeepAliveTimeoutSeconds": "5", "RequestBodyTimeoutSeconds": 2.5,
        "MaxConnections": 0, "MaxConnectionsPerIp": "0"}), environ={"Limits__MaxConnections": "0"})
    assert loaded.settings.limits == LimitsSettings(
        request_headers_timeout_seconds=10, keep_alive_timeout_seconds=5, request_body_timeout_seconds=2.5,
        max_connections=0, max_connections_per_ip=0)
    assert loaded.warnings == ()


def test_bad_limits_name_their_keys():
    with pytest.raises(ConfigError) as caught:
        load_settings(data=base_config(Limits={"KeepAliveTimeoutSeconds": 0, "MaxConnectionsPerIp": -1}), environ={})
    problems = "\n".join(caught.value.problems)
    assert "Limits.KeepAliveTimeoutSeconds: must be a number of seconds greater than 0" in problems
    assert "Limits.MaxConnectionsPerIp: must be >= 0, got -1; use 0 for unlimited" in problems
    loaded = load_settings(data=base_config(Limits={"MaxConnections": 10, "MaxConnectionsPerIp": 20, "Other": 1}),
                           environ={})
    assert [w.split(":", 1)[0] for w in loaded.warnings] == ["Limits.MaxConnectionsPerIp", "Limits.Other"]
