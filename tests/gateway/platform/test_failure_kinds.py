"""What each way an initiate can fail means for trying again (``PlatformError.kind``), through the real client.

The line that matters: a call that may have created a platform session (sent, and no usable answer) is
never repeated; a call that certainly created none (nothing sent, or a 5xx answer) may be; our own
failure to build the request, a 4xx or a refusal cannot succeed on retry.
"""

from __future__ import annotations

import dataclasses

import pytest
from tornado.testing import bind_unused_port

from gateway.platform.client import PlatformClient
from gateway.platform.errors import FailureKind, PlatformError
from simulator.app import PlatformSimulator
from tests.harness.platform_client import CAMPAIGN, make_request, make_settings, port_whose_connect_hangs

INITIATE = "/api/v1/business/42/websession/initiate"


async def initiate_error(port: int, *, request=None, connect: float = 2.0, timeout: float = 5.0) -> PlatformError:
    platform = PlatformClient(make_settings(port, connect=connect, request=timeout))
    try:
        with pytest.raises(PlatformError) as caught:
            await platform.initiate(CAMPAIGN, request or make_request(), "203.0.113.9")
    finally:
        platform.close()
    return caught.value


def initiates(sim: PlatformSimulator) -> int:
    return sum(1 for r in sim.requests if r.path == INITIATE)


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("http500", FailureKind.RETRYABLE),
        ("http400", FailureKind.PERMANENT),
        ("error", FailureKind.PERMANENT),
        ("concurrency", FailureKind.PLATFORM_FULL),
        ("hangup", FailureKind.AMBIGUOUS),  # the connection closed after the request was sent
    ],
)
async def test_answers_of_the_simulated_platform(sim_port, mode: str, kind: FailureKind) -> None:
    sim, port = sim_port
    sim.fail_next(1, mode)
    error = await initiate_error(port)
    assert error.kind is kind, error
    assert initiates(sim) == 1


async def test_a_timeout_after_sending_is_ambiguous_the_platform_may_have_created_the_session(sim_port) -> None:
    sim, port = sim_port
    sim.fail_next(1, "slow")  # the platform creates the call, then answers too late
    error = await initiate_error(port, timeout=0.5)
    assert (error.code, error.sent, error.kind) == (PlatformError.TIMEOUT, True, FailureKind.AMBIGUOUS)
    assert error.may_have_created and not error.retryable
    assert len(sim.live_calls) == 1  # it did: a retry would have made a second one


async def test_connection_refused_sent_nothing_and_is_retryable() -> None:
    sock, port = bind_unused_port()
    sock.close()
    error = await initiate_error(port)
    assert (error.code, error.sent, error.kind) == (PlatformError.UNREACHABLE, False, FailureKind.RETRYABLE)


async def test_a_connect_timeout_sent_nothing_and_is_retryable() -> None:
    with port_whose_connect_hangs() as port:
        error = await initiate_error(port, connect=0.3)
    assert (error.code, error.sent, error.kind) == (PlatformError.TIMEOUT, False, FailureKind.RETRYABLE)


async def test_a_request_that_cannot_be_encoded_fails_before_sending_and_cannot_succeed(sim_port) -> None:
    sim, port = sim_port
    request = dataclasses.replace(make_request(), dynamic_variables={"FirstName": "\ud800"})
    error = await initiate_error(port, request=request)
    assert (error.code, error.sent, error.kind) == (PlatformError.UNSENDABLE, False, FailureKind.PERMANENT)
    assert "\ud800" not in error.message
    assert initiates(sim) == 0


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (500, PlatformError.HTTP_STATUS, FailureKind.RETRYABLE),
        (502, PlatformError.HTTP_STATUS, FailureKind.RETRYABLE),
        (503, "X:MAINTENANCE", FailureKind.RETRYABLE),
        (504, PlatformError.HTTP_STATUS, FailureKind.AMBIGUOUS),  # a proxy stopped waiting for the platform
        (429, PlatformError.HTTP_STATUS, FailureKind.RETRYABLE),
        (400, PlatformError.HTTP_STATUS, FailureKind.PERMANENT),
        (404, PlatformError.HTTP_STATUS, FailureKind.PERMANENT),
        (302, PlatformError.HTTP_STATUS, FailureKind.PERMANENT),
        (200, "InitiateWebSession:REGION_NOT_FOUND", FailureKind.PERMANENT),
        (200, PlatformError.INVALID_RESPONSE, FailureKind.AMBIGUOUS),  # a success we cannot read
        (500, "InitiateWebSession:CONCURRENCY_LIMIT_REACHED", FailureKind.PLATFORM_FULL),
    ],
)
def test_kind_of_an_answer(status: int, code: str, kind: FailureKind) -> None:
    assert PlatformError("x", code=code, status=status).kind is kind


def test_no_answer_after_sending_is_ambiguous_and_before_sending_retryable() -> None:
    assert PlatformError("x", code=PlatformError.TIMEOUT).kind is FailureKind.AMBIGUOUS
    assert PlatformError("x", code=PlatformError.UNREACHABLE).kind is FailureKind.AMBIGUOUS
    assert PlatformError("x", code=PlatformError.UNREACHABLE, sent=False).kind is FailureKind.RETRYABLE
