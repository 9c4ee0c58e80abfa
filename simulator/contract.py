"""What the simulated platform's API says: its answer envelope, its error codes, and how it checks an initiate.

The platform binds JSON case-insensitively and refuses a bad initiate with a ``{success: false, code, message}``
envelope rather than an HTTP error, so the gateway's platform client sees the same shapes here as there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CODE_PREFIX = "InitiateWebSession:"
CONCURRENCY_LIMIT_CODE = "InitiateWebSession:CONCURRENCY_LIMIT_REACHED"
INVALID_API_KEY_CODE = "ValidateUserAPIAndBusinessWithPermissions:ValidateUserAPIWithPermissions:API_KEY_INVALID"


def envelope(*, data: Any = None, code: str | None = None, message: str | None = None) -> dict[str, Any]:
    """The platform's ``FunctionReturnResult``, serialized camelCase."""
    return {"success": code is None, "message": message, "code": code, "data": data}


def ci_get(body: Mapping[str, Any], name: str) -> Any:
    """``body[name]`` matched without regard to case; ``None`` when absent."""
    # The platform binds JSON case-insensitively, so the client's PascalCase must work, and camelCase too.
    lowered = name.lower()
    for key, value in body.items():
        if key.lower() == lowered:
            return value
    return None


def strict_int(value: Any) -> int | None:
    """``value`` if it is a JSON integer (``True`` is not), else ``None``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def validate_initiate(body: Any) -> tuple[str, str] | None:
    """The first problem with an initiate body as ``(code without prefix, message)``, or ``None``."""
    if not isinstance(body, Mapping):
        return "INVALID_REQUEST", "Request body must be a JSON object."
    if ci_get(body, "TransportType") not in (0, 1) or isinstance(ci_get(body, "TransportType"), bool):
        return "CONFIG_TRANSPORT_TYPE_INVALID", "Invalid transport type."
    for name, code in (("WebCampaignId", "CAMPAIGN_NOT_FOUND"), ("RegionId", "REGION_NOT_FOUND")):
        if not isinstance(ci_get(body, name), str) or not ci_get(body, name):
            return code, f"{name} is missing or not found."
    client = ci_get(body, "ClientIdentifier")
    if not isinstance(client, str) or not client:
        return "CONFIG_CLIENT_IDENTIFIER_REQUIRED", "Client identifier is required."
    if len(client) > 256:
        return "CONFIG_CLIENT_IDENTIFIER_TOO_LONG", "Client identifier must be at most 256 characters."
    if "/" in client or "\\" in client:
        return "CONFIG_CLIENT_IDENTIFIER_INVALID", "Client identifier must not contain '/' or '\\'."
    for name, code in (("AudioInputConfiguration", "INPUT"), ("AudioOutputConfiguration", "OUTPUT")):
        config = ci_get(body, name)
        fields = ("SampleRate", "BitsPerSample", "AudioEncodingType", "AudioEncodingFallbackMode")
        if not isinstance(config, Mapping) or any(strict_int(ci_get(config, f)) is None for f in fields):
            return f"CONFIG_AUDIO_{code}_CONFIGURATION_INVALID", f"{name} is missing or incomplete."
    frame = strict_int(ci_get(ci_get(body, "AudioOutputConfiguration"), "FrameDurationMs"))
    if frame is None or not 20 <= frame <= 150:
        return "CONFIG_AUDIO_OUTPUT_CONFIGURATION_FRAME_DURATION_MS_INVALID", "Frame duration must be 20-150 ms."
    for name in ("DynamicVariables", "Metadata"):
        value = ci_get(body, name)
        if value is not None and not (
            isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values())
        ):
            return f"CONFIG_{name.upper()}_INVALID", f"{name} must map strings to strings."
    return None
