"""Pure parts of the gateway edge: CORS decisions, capacity arithmetic, the event hook, backoff."""

import logging

import pytest

from gateway.http.cors import CorsPolicy
from gateway.queue.capacity import UNKNOWN_PLATFORM_CAP, CapacityPolicy, PlatformUsage, cap_from_platform
from gateway.queue.dispatcher import next_backoff
from gateway.queue.events import EventHub, QueueChanged, SessionReady


class TestCors:
    policy = CorsPolicy(["https://shop.example", "http://localhost:3000/"])

    def test_an_allowed_origin_is_echoed_and_others_get_nothing(self):
        assert self.policy.response_headers("https://shop.example")["Access-Control-Allow-Origin"] == "https://shop.example"
        assert self.policy.response_headers("https://evil.example") == {}
        assert self.policy.response_headers(None) == {}

    def test_a_trailing_slash_or_other_case_in_settings_still_matches(self):
        assert self.policy.allows("http://localhost:3000")
        assert self.policy.allows("HTTPS://SHOP.EXAMPLE")
        assert not self.policy.allows("http://localhost:3001")

    def test_preflight_echoes_method_and_requested_headers(self):
        headers = self.policy.preflight_headers("https://shop.example", "post", "content-type, x-custom")
        assert headers["Access-Control-Allow-Methods"] == "POST"
        assert headers["Access-Control-Allow-Headers"] == "content-type, x-custom"
        assert int(headers["Access-Control-Max-Age"]) > 0

    def test_preflight_from_an_unlisted_origin_or_without_a_method_gets_no_headers(self):
        assert self.policy.preflight_headers("https://evil.example", "POST", None) == {}
        assert self.policy.preflight_headers("https://shop.example", None, None) == {}

    def test_a_star_allows_any_origin(self):
        assert CorsPolicy(["*"]).allows("https://anything.example")


class TestCapacity:
    def test_only_usage_that_is_not_ours_counts_against_the_platform_limit(self):
        # 10 allowed, 7 live of which 4 are ours: 3 belong to others, so 7 are ours to use.
        assert cap_from_platform(PlatformUsage(current=7, limit=10), ours=4) == 7

    def test_the_cap_never_goes_negative(self):
        assert cap_from_platform(PlatformUsage(current=50, limit=10), ours=0) == 0
        assert cap_from_platform(PlatformUsage(current=1, limit=10), ours=5) == 10

    def test_a_configured_cap_wins_over_platform_readings(self):
        policy = CapacityPolicy(global_cap=3, campaign_caps={"A": 1})
        assert not policy.syncs_from_platform
        policy.learn(PlatformUsage(current=0, limit=100), ours=0)
        assert policy.caps().global_cap == 3
        assert policy.caps().campaign_caps == {"A": 1}

    def test_unknown_platform_limit_admits_optimistically_and_learning_reports_growth(self):
        policy = CapacityPolicy(global_cap=None, campaign_caps={})
        assert policy.caps().global_cap == UNKNOWN_PLATFORM_CAP
        assert policy.learn(PlatformUsage(current=5, limit=5), ours=0) is False  # shrank to 0
        assert policy.caps().global_cap == 0
        assert policy.learn(PlatformUsage(current=4, limit=5), ours=0) is True   # one freed
        assert policy.caps().global_cap == 1
        assert policy.learn(None, ours=0) is True  # sync failed: back to optimistic
        assert policy.caps().global_cap == UNKNOWN_PLATFORM_CAP


class TestEvents:
    def test_every_subscriber_gets_the_event_even_when_one_fails(self, caplog):
        hub = EventHub()
        seen = []

        def broken(event):
            raise RuntimeError("subscriber bug")

        hub.subscribe(broken)
        unsubscribe = hub.subscribe(seen.append)
        event = SessionReady(request_id="r1", web_socket_url="ws://x")
        with caplog.at_level(logging.ERROR, logger="gateway.queue.events"):
            hub.publish(event)
        assert seen == [event]
        assert "subscriber bug" in caplog.text
        unsubscribe()
        hub.publish(QueueChanged(reason="x"))
        assert seen == [event]


@pytest.mark.parametrize(("current", "expected"), [(0, 1.0), (1.0, 2.0), (8.0, 16.0), (16.0, 30.0), (30.0, 30.0)])
def test_backoff_doubles_up_to_a_ceiling(current, expected):
    assert next_backoff(current) == expected
