"""What the platform client's tests share: its settings, a session request, and a port whose connect hangs."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.config.settings import CampaignSettings, PlatformSettings
from gateway.model.request import AudioConfiguration, SessionRequest

TOKEN = "iqra_sk_test_secret_0123456789"
CAMPAIGN = CampaignSettings(name="Web", business_id="42", web_campaign_id="wc-1", allowed_region_ids=("eu",))


def make_request(*, transport: int = 0, client_identifier: str | None = "user-1") -> SessionRequest:
    return SessionRequest(
        campaign_id="Web",
        region_id="eu",
        transport_type=transport,
        client_identifier=client_identifier,
        dynamic_variables={"FirstName": "Ann"},
        metadata={"source": "test"},
        audio=AudioConfiguration(
            input_encoding_type=1,
            input_sample_rate=16000,
            input_bits_per_sample=16,
            output_encoding_type=1,
            output_sample_rate=24000,
            output_bits_per_sample=16,
        ),
    )


def make_settings(port: int, *, token: str = TOKEN, connect: float = 2.0, request: float = 5.0) -> PlatformSettings:
    return PlatformSettings(
        api_secret_token=token,
        base_url=f"http://127.0.0.1:{port}/api/v1/",
        campaigns={"Web": CAMPAIGN},
        connect_timeout_seconds=connect,
        request_timeout_seconds=request,
    )


@contextmanager
def port_whose_connect_hangs() -> Iterator[int]:
    """A listener whose accept backlog is full and never drained: the kernel drops further SYNs, so a
    client's connect hangs until its connect timeout."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
