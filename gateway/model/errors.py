"""The two ways bad input is reported: a broken configuration file, and a bad session request.

Both carry text meant for a person (an operator or an integrator), never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(Exception):
    """The configuration cannot be used; the gateway must not start.

    Every problem found is reported at once, so an operator fixes the file in one pass.

    :param problems: one line each, ``"Key.Path: what is wrong and how to fix it"``.
    """

    problems: tuple[str, ...]

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        heading = f"{count} configuration problem{'s' if count != 1 else ''}:"
        super().__init__("\n".join([heading, *("  - " + p for p in self.problems)]))


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
