"""The platform's integer enums, with the values the widget and the platform agree on.

Values come from the platform's ``WebSessionTransportTypeEnum`` and ``AudioEncodingTypeEnum``; requests
carry them as plain integers (no string names), as the original middleware accepted them.
"""

from __future__ import annotations

from enum import IntEnum


class TransportType(IntEnum):
    """How the browser carries audio to the platform once a session exists."""

    WEBSOCKET = 0
    WEBRTC = 1


class AudioEncodingType(IntEnum):
    """Audio codecs the platform names. ``MPEG`` is defined but disabled on the platform."""

    PCM = 1
    WAV = 2
    MULAW = 3
    ALAW = 4
    G722 = 5
    G729 = 6
    OPUS = 7
    MPEG = 8


#: Encodings a WebRTC session may use; the platform also requires input and output to match.
WEBRTC_ENCODINGS: frozenset[AudioEncodingType] = frozenset(
    {AudioEncodingType.OPUS, AudioEncodingType.MULAW, AudioEncodingType.ALAW, AudioEncodingType.G722}
)

#: Encodings the platform defines but will not serve.
DISABLED_ENCODINGS: frozenset[AudioEncodingType] = frozenset({AudioEncodingType.MPEG})
