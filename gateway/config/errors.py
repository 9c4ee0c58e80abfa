"""How a broken configuration is reported: every problem at once, with text meant for an operator."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(Exception):
    """The configuration cannot be used; the gateway must not start.

    Every problem found is reported at once, so an operator fixes the file in one pass.

    :param problems: one line each, ``"Key.Path: what is wrong and how to fix it"``.
    :param warnings: what was found beside them (an unknown key may explain a missing one), shown with them.
    """

    problems: tuple[str, ...]
    warnings: tuple[str, ...]

    def __init__(self, problems: Iterable[str], *, warnings: Iterable[str] = ()) -> None:
        self.problems = tuple(problems)
        self.warnings = tuple(warnings)
        count = len(self.problems)
        heading = f"{count} configuration problem{'s' if count != 1 else ''}:"
        super().__init__("\n".join([heading, *("  - " + p for p in self.problems)]))
