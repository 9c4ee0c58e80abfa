"""The platform simulator on a free port, for the platform client's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from simulator.app import PlatformSimulator, make_simulator_app
from tests.harness.platform_client import TOKEN


@pytest.fixture
async def sim_port() -> AsyncIterator[tuple[PlatformSimulator, int]]:
    sim = PlatformSimulator(api_token=TOKEN, webhook_url=None, webhook_token="", call_seconds=None, hang_seconds=20)
    sock, port = bind_unused_port()
    server = HTTPServer(make_simulator_app(sim))
    server.add_sockets([sock])
    yield sim, port
    server.stop()
    await sim.aclose()
    await server.close_all_connections()
