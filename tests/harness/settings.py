"""The smallest configuration the loader accepts, and loading a configuration with no environment."""

from __future__ import annotations

from typing import Any

from gateway.config import LoadedSettings, load_settings


def minimal() -> dict[str, Any]:
    return {
        "VoiceAiPlatform": {
            "ApiSecretToken": "tok",
            "Campaigns": {"Web": {"BusinessId": "1", "WebCampaignId": "w", "AllowedRegionIds": ["EU-DE"]}},
        },
        "Security": {"WebhookApiToken": "hook"},
    }


def load(data: dict[str, Any], environ: dict[str, str] | None = None) -> LoadedSettings:
    return load_settings(data=data, environ=environ or {})
