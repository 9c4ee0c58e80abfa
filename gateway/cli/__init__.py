"""The ``iqra-gateway`` commands: serve (with the ``--processes`` supervisor), demo, check-config and
simulate-platform."""

from gateway.cli.commands import main

__all__ = ["main"]
