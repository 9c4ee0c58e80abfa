"""How a bad session request is reported: with text meant for a person (an integrator), never a traceback.

(A broken configuration file is :class:`gateway.config.errors.ConfigError`.)
"""

from __future__ import annotations


class PayloadError(Exception):
    """A session request the gateway refuses with ``400 {"message": message}``.

    :param message: the complete sentence sent to the client.
    :param field: the camelCase path of the offending field (``audioConfiguration.inputSampleRate``),
        or ``None`` when the body as a whole is wrong.
    """

    message: str
    field: str | None

    def __init__(self, message: str, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(message)
