"""The README's command synopsis and the argument parser cannot drift: every option of every command is
listed on that command's line, and every command listed exists."""

from __future__ import annotations

import argparse
import re

from gateway.cli.commands import build_parser
from tests.harness.paths import ROOT


def _synopsis() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Commands\n", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the Commands section has no code block"
    return [line.split("#", 1)[0] for line in block.group(1).splitlines() if line.strip()]


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings
            if option.startswith("--") and option != "--help"}


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def test_the_readme_synopsis_lists_every_option_of_every_command() -> None:
    parser = build_parser()
    lines = _synopsis()
    general = [line for line in lines if line.startswith("iqra-gateway [")]
    assert len(general) == 1, "one line for the options before the command"
    assert _options(parser) <= set(re.findall(r"--[a-z-]+", general[0]))
    listed = {line.split()[1]: line for line in lines if not line.startswith("iqra-gateway [")}
    commands = _commands(parser)
    assert set(listed) == set(commands)
    for name, command in commands.items():
        # --log-level and --log-format are on the general line and accepted after any command too.
        missing = _options(command) - _options(parser) - set(re.findall(r"--[a-z-]+", listed[name]))
        assert not missing, f"README's synopsis of {name} lacks {sorted(missing)}"
