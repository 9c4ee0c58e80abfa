"""The ``VoiceAiPlatform`` section: the platform's API key, address, timeouts and the campaigns it serves."""

from __future__ import annotations

from functools import partial
from typing import Any
from urllib.parse import urlsplit

from gateway.config.binder import Binder
from gateway.config.problems import Section, failed
from gateway.config.settings import DEFAULT_BASE_URL, CampaignSettings, PlatformSettings, frozen_campaigns


def bind_platform(binder: Binder, section: Section | None) -> PlatformSettings | None:
    if section is None:
        binder.problem("VoiceAiPlatform", "missing; add the section with ApiSecretToken, BaseUrl and Campaigns")
        return None
    token = binder.required_string(section, "ApiSecretToken", "set it to the platform API key (iqra_sk_...)")
    base_url = _base_url(binder, section.child_path("BaseUrl"), section.take("BaseUrl"))
    campaigns = _bind_campaigns(binder, section)
    connect = binder.seconds(section.child_path("ConnectTimeoutSeconds"), section.take("ConnectTimeoutSeconds"))
    request = binder.seconds(section.child_path("RequestTimeoutSeconds"), section.take("RequestTimeoutSeconds"))
    if request is not None:
        binder.request_timeout = request
    binder.warn_unknown(section)
    if token is None or base_url is None or campaigns is None:
        return None
    defaults = PlatformSettings(api_secret_token="", base_url="", campaigns={})
    return PlatformSettings(
        api_secret_token=token,
        base_url=base_url,
        campaigns=frozen_campaigns(campaigns),
        connect_timeout_seconds=defaults.connect_timeout_seconds if connect is None else connect,
        request_timeout_seconds=defaults.request_timeout_seconds if request is None else request,
    )


def _base_url(binder: Binder, path: str, value: Any) -> str | None:
    if value is None:
        return DEFAULT_BASE_URL
    text = binder.string(path, value)
    if text is None:
        return None
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        binder.problem(path, f"{text!r} is not an http(s) URL; use the platform API root, e.g. {DEFAULT_BASE_URL}", value)
        return None
    text = text.strip()
    # Relative request paths are joined under BaseUrl, which only works when it ends in "/".
    return text if text.endswith("/") else text + "/"


def _bind_campaigns(binder: Binder, platform: Section) -> dict[str, CampaignSettings] | None:
    campaigns_section = binder.section(platform, "Campaigns")
    path = platform.child_path("Campaigns")
    example = '"Campaigns": {"MyCampaign": {"BusinessId": "...", "WebCampaignId": "...", "AllowedRegionIds": ["EU-DE"]}}'
    if campaigns_section is None:
        if not failed(binder.problems, path):
            binder.problem(path, f"missing; add at least one campaign, e.g. {example}")
        return None
    if not campaigns_section.node.entries:
        binder.problem(path, f"is empty; add at least one campaign, e.g. {example}")
        return None
    campaigns: dict[str, CampaignSettings] = {}
    ok = True
    for _key, (name, _value) in list(campaigns_section.node.entries.items()):
        campaign = _bind_campaign(binder, campaigns_section, name)
        if campaign is None:
            ok = False
        else:
            campaigns[name] = campaign
    return campaigns if ok else None


def _bind_campaign(binder: Binder, campaigns: Section, name: str) -> CampaignSettings | None:
    section = binder.section(campaigns, name)
    if section is None:
        return None
    if not name.strip():
        binder.problem(section.path, "a campaign needs a non-empty name (the campaignId browsers send)")
    business_id = binder.required_string(section, "BusinessId", "set it to the platform business id that owns the campaign")
    web_campaign_id = binder.required_string(section, "WebCampaignId", "set it to the platform's web campaign id")
    regions_path = section.child_path("AllowedRegionIds")
    regions = binder.list_of(section, "AllowedRegionIds", partial(_region, binder))
    if not regions and not failed(binder.problems, regions_path):
        binder.warn(regions_path, "no regions: every request for this campaign will be refused; list e.g. [\"EU-DE\"]")
    cap = binder.integer(section.child_path("MaxConcurrentSessions"), section.take("MaxConcurrentSessions"), minimum=0)
    if cap == 0:
        binder.warn(section.child_path("MaxConcurrentSessions"), "is 0: every request for this campaign will be queued")
    if business_id is not None and not business_id.strip().isdigit():
        binder.warn(section.child_path("BusinessId"), f"{business_id!r} is not numeric; the platform's business ids are numbers")
    binder.warn_unknown(section)
    if business_id is None or web_campaign_id is None or not name.strip():
        return None
    return CampaignSettings(
        name=name,
        business_id=business_id.strip(),
        web_campaign_id=web_campaign_id.strip(),
        allowed_region_ids=regions,
        max_concurrent_sessions=cap,
    )


def _region(binder: Binder, path: str, value: Any) -> str | None:
    text = binder.string(path, value)
    if text is not None and not text.strip():
        binder.problem(path, "is empty; a region id looks like \"EU-DE\"")
        return None
    return text
