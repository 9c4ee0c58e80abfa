"""The simulator's records: one simulated call, and one request captured for tests to inspect."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class CallSocket(Protocol):
    """What the simulated platform needs of a call's audio socket (:class:`simulator.audio.AudioSocketHandler`)."""

    def end(self, reason: str) -> None: ...

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CapturedRequest:
    """A request the simulator's platform API received, for tests to check what the client sent."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(slots=True, kw_only=True)
class SimCall:
    """One simulated conversation; mutable because it lives through initiated → connected → ended."""

    conversation_session_id: str
    web_session_id: str
    business_id: str
    web_campaign_id: str
    region_id: str
    client_identifier: str
    transport_type: int
    input_sample_rate: int
    output_sample_rate: int
    output_encoding_type: int
    output_bits_per_sample: int
    created_at: float
    state: str = "initiated"
    connected_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    frames_received: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    webhook: str = "pending"
    webhook_attempts: int = 0
    socket: CallSocket | None = field(default=None, repr=False)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def live(self) -> bool:
        return self.state != "ended"

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversationSessionId": self.conversation_session_id,
            "webSessionId": self.web_session_id,
            "businessId": self.business_id,
            "webCampaignId": self.web_campaign_id,
            "regionId": self.region_id,
            "clientIdentifier": self.client_identifier,
            "transportType": self.transport_type,
            "state": self.state,
            "createdAt": self.created_at,
            "connectedAt": self.connected_at,
            "endedAt": self.ended_at,
            "endReason": self.end_reason,
            "framesReceived": self.frames_received,
            "bytesReceived": self.bytes_received,
            "framesSent": self.frames_sent,
            "bytesSent": self.bytes_sent,
            "webhook": self.webhook,
            "webhookAttempts": self.webhook_attempts,
        }
